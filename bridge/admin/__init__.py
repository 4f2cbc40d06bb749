"""Admin side: installation steps and the `skbridge test-suite` checks."""
