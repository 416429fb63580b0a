"""The dialplan's side of cbserver: the FastAGI server that routes calls coming in."""
