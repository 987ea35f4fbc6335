"""Editing methods: direction discovery and attention controls."""
