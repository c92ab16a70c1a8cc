"""The one evaluation home: which pairs evaluate (`pairs`, disjoint from calibration), how verdicts
are compared (`metrics`: the one definition of agreement, and the rest), what teacher forcing and
hidden states say (`teacher_forced`), and the demo model against its world's own rules (`demo`).
`python -m bench` and `python -m bench.demo` are commands over it."""
