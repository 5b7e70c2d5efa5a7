"""Report: metrics (scikit-learn), quality gates, rich/JSON/CSV output and plots; the only layer that knows how things look."""
