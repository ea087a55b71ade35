"""Pulsar credentials per model: tokens the operator signs, and the grants that give each
model's role exactly what its workers need (SPEC §9, docs/pulsar-tenancy.md)."""
