"""The driver: the parts of a run on the user's machine, each taking its collaborators.

``images`` publishes the job images; ``submit`` turns a ready node into a job (or array);
``resume`` finds nodes an earlier driver or the driver itself already finished; ``poll``
follows the jobs in flight; ``collect`` brings a finished job's node directory home and answers
as Nipype expects; ``view`` counts what the progress display shows. The plugin wires them to
Nipype's loop and is the only part that reads Nipype's own bookkeeping.
"""
