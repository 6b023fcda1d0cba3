"""The Kubernetes manifests (kustomize base and overlays) and their offline validation gate (`make k8s-validate`)."""
