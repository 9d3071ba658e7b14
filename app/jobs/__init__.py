"""Job processing: the handlers of each job type, their context, and the runner."""
