"""AI Model Operator: runs uplion AI model workers on Kubernetes."""
