"""adatsq.plugins."""
