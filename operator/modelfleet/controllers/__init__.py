"""Thin kopf handlers: read the world, ask the pure core what to do, write the result."""
