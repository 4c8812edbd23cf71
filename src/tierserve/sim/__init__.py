"""Fleet simulator: the live scheduler, router and autoscaler objects driven by a virtual clock."""
