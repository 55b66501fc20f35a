"""The compiler: `Spec -> Program` (lower), then passes `Program -> Program`:
reverse mode (reverse), forward mode (forward), clean-up (optimize); the
registry's derivative rules specialised to one assignment (rules)."""
