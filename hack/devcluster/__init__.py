"""A local Kubernetes control plane built from Go modules and run as plain processes."""
