"""Teaching tools on top of the compiler: explain (the chain rule as tables), graph, plot."""
