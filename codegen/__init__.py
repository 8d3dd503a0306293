"""bpj's code generator: protos/ in, bpj/_gen/ out.

A small pipeline, each stage in its own module:

    protoc.py   run protoc (grpcio-tools) for a FileDescriptorSet and .pyi stubs
    model.py    read the descriptors and protos/bpj_services.json into plain dataclasses
    render.py   render the models through the templates in templates/ into {path: text}
    fmt.py      run the Python through ruff format
    __main__.py write the result into bpj/_gen/, or compare with it (--check)
"""
