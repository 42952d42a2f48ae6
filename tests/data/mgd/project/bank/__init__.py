"""A tiny bank: customers and their accounts."""
