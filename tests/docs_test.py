"""README.md and docs/: every relative Markdown link names a file that exists, and every
#anchor into a Markdown page names one of its headings (GitHub's heading ids)."""

import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r'\]\(([^)\s]+)\)')


def _prose(text):
    """Text outside fenced code blocks, where `](` is no link."""
    return re.sub(r'```.*?```', '', text, flags=re.S)


def _anchor(heading):
    """GitHub's id of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def _pages():
    pages = [os.path.join(REPO, 'README.md')]
    pages += glob.glob(os.path.join(REPO, 'docs', '**', '*.md'), recursive=True)
    # The study's records are data, not pages.
    return sorted(p for p in pages if f'{os.sep}evidence{os.sep}runs{os.sep}' not in p)


def _links(path):
    with open(path) as f:
        return [
            m.group(1)
            for m in LINK.finditer(_prose(f.read()))
            if not re.match(r'[a-z]+:', m.group(1))  # http:, https:, mailto:
        ]


def _anchors(path):
    with open(path) as f:
        return {_anchor(h) for h in re.findall(r'^#+ (.*)$', _prose(f.read()), flags=re.M)}


def test_anchor_is_githubs_heading_id():
    assert _anchor("DARP's protocol (paper Table 3)") == 'darps-protocol-paper-table-3'
    assert _anchor("The paper's experiment (GPU)") == 'the-papers-experiment-gpu'


def test_every_relative_link_exists():
    pages = _pages()
    assert len(pages) > 5, 'README.md and docs/ not found: wrong repository root?'
    broken = []
    for page in pages:
        for link in _links(page):
            target, _, anchor = link.partition('#')
            path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
            where = f'{os.path.relpath(page, REPO)}: ({link})'
            if not os.path.exists(path):
                broken.append(f'{where}: no such file')
            elif anchor and path.endswith('.md') and anchor not in _anchors(path):
                broken.append(f'{where}: no such heading')
    assert not broken, '\n'.join(broken)
