"""adatsq.compiler."""
