"""vidiff studio: a local web app to generate, condition, evaluate and browse runs.

`vidiff studio --runs DIR` serves one page (plain HTML and JavaScript, no assets from outside) from
Python's own HTTP server. Every long job runs the very `vidiff` command the page shows, in a
subprocess queued behind the others, so the page stays responsive and each result can be reproduced
from a terminal. Files are served only from the runs folder and the studio's own output folder.

Modules: paths (safe path resolution), runs (run folders, metrics.jsonl), commands (the reproducing
command lines), jobs (the queue and its progress), media (previews, uploads), plots (SVG curves), app
(the HTTP server and its routes).
"""
