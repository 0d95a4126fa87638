module example.invalid/taskbatch-pause

go 1.22
