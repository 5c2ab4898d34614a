"""Does edgetune's selection make a better adapter than naive buffers, on streams that look like
real users? The selection table (issue 12), resumable cell by cell.

- ``streams``  realistic users from the offline data (bursts, drift, repeats, paraphrases, low-value
               turns, a long tail) and their iid controls; stream statistics
- ``features`` per-event features (the product's embedding, EOE, DSS, domain; UDS uncertainty; IFD)
- ``plan``     the one configuration, the rows, the cells in run order
- ``cells``    one cell: select (window protocol), synthesize, LoRA-train, evaluate
- ``report``   paired.csv, table.md, forest.png
- ``cli``      ``python -m benchmarks.selection {streams,features,run,report,all} [--smoke]``

Protocol (per user, scaled from the paper's 4,600-event stream, windows of 800 and buffer 64):
a stream of 1,200 events, windows of 600, buffer 64, a fresh buffer per window whose contents join
the training set (at most 128 samples, so 10.7 % of the stream is kept, against the paper's 8.3 %);
one LoRA run (r 8, 1 epoch, lr 2e-4, 128 tokens, fp32, seed = the user's index) on the final set;
greedy answers (no repeated 3-gram, as ``edgetune eval``) to the user's held-out test prompts,
scored by ROUGE-1 F and by the answer loss of the reference.
"""
