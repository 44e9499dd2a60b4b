"""The app's pages, once: their files, titles and what each teaches. app/main.py makes the
navigation from it, the Start page its map of the lab."""

PAGES = [  # (file, title, what it teaches); the first is the default page
    ("views/start.py", "Start", "what labkit is, and a path through the pages told with your own runs"),
    ("views/runs.py", "Runs", "every run, its status, results card and config; the demo models for a fresh start"),
    ("views/train.py", "Train", "start a pretraining or a fine-tuning run from the browser and watch its loss curve; "
                                "stop it with a checkpoint and resume it; one run at a time per server, the rest in line"),
    ("views/curves.py", "Loss curves", "how the loss falls while a model trains, by step, tokens or time"),
    ("views/learn.py", "Watch it learn", "a Transformer's heads at each evaluation of one run: the step a copying "
                                         "(induction) head forms, beside the loss curve"),
    ("views/attention.py", "Attention", "where each head of a Transformer looks; switch a head off and see what "
                                        "the prediction loses; attention before and after fine-tuning; long inputs"),
    ("views/compare.py", "Compare", "an RNN and a Transformer on the same sentence: saliency, surprisal, loss by "
                                    "position and word frequency, agreement, surgery on both"),
    ("views/lens.py", "Logit lens", "what the model would predict from each layer, token by token"),
    ("views/generate.py", "Generate", "sampling one token at a time: the next-token distribution at each step, "
                                      "and what temperature and top-p do to it"),
    ("views/finetune.py", "Fine-tuning", "a pretrained model against one trained from scratch on a labelled task"),
]
