"""The application: configuration, wiring of outputs, the demo and the command line."""
