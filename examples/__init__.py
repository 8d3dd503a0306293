"""Programs that use bpj as a user would: the main job that `make run` runs."""
