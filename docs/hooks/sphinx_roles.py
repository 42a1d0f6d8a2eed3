"""MkDocs hook: a docstring's Sphinx role (:func:`name`, :class:`~pkg.Name`) is shown as the code it names,
`name` (`Name` after a ~, as Sphinx shows it), instead of the role's literal text."""
import re

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def on_page_content(html, **kwargs):
    return ROLE.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html)
