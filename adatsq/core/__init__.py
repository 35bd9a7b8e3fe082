"""The base package every room builds on: atomic writes, typed JSON configs, stable hashes, the error
classes, the model registry and the schedule format (contract 2). It imports no other room."""
