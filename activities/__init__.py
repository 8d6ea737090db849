"""Activities: the only code that talks to Kubernetes (see ``activities.kube``)."""
