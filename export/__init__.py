"""adatsq.export."""
