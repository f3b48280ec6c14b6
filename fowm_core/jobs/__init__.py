"""The `fowm` command and its jobs: collect, pretrain, finetune, eval, experiment, bench."""
