module sandbox-steps.local/cluster/pause

go 1.26
