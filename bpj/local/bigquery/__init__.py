"""Local BigQuery: one table store and the two public APIs over it.

store.py        TableStore: datasets and tables as Arrow IPC files under a root directory
read_server.py  StorageReadServicer: the BigQuery Storage Read API (gRPC) over a TableStore
rest.py         the BigQuery REST API v2 subset google-cloud-bigquery needs, as a WSGI app and a server
"""
