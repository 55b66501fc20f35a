"""The front end: what the user wrote (a YAML spec, a dict, SymPy) -> a validated `Spec`."""
