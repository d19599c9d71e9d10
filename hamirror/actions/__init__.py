"""Actions: the resources the agent moves between nodes (virtual IP, module scripts) and the
checkers that watch the application. Each module here does one job and knows nothing of the
state machine; the agent's executor maps decisions onto them."""
