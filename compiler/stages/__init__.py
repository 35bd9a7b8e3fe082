"""The stages of a compile, one module each; their order lives in compiler/pipeline.py."""
