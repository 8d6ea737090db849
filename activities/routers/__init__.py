"""Traffic routers: the activities that set real weights between the stable and canary Services.

Each router (``istio``, ``gateway_api``) weighs routes in an object the user owns and changes
nothing else in it but the header routes it adds; ``nginx`` keeps a canary Ingress of its own
beside the user's; ``services`` creates the two Services the routes point at when the user
has not. ``activities`` registers them for the worker.
"""
