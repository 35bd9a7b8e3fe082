"""adatsq.runtime."""
