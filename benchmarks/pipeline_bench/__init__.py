"""The pipeline benchmark's sections, one module per thing measured; bench_pipeline.py runs
them and prints the one table (and sets the functions' Powertools environment before any of
these modules is imported).

    common      scratch databases, seed rows, settings, the functions' handlers, child runs
    table       the results table: informational rows, targets and checks
    deliver     receivers, the baseline sender, the httpx floor, deliver throughput, CPU and
                log + EMF bytes per message
    statements  SQL statements per deliver batch
    evaluate    evaluate rows/s and memory, enqueue concurrency, the backlog and its EXPLAIN
    cost        evaluate with nothing due (warm, cold) and the cost rows
    pace        backlogs drained by five deliver processes against a provider that takes R
                requests/s (with and without the limit, quiet-hour deferrals, an outage)
    sqs_standin the in-memory SQS queue the pace runs' processes share
"""
