"""adatsq.passes."""
