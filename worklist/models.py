# Orders and scheduled procedure steps arrive with the worklist issue.
