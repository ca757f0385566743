"""What the classifier, triage, history and image pages show; grouped counts only, keyset pages of images.

Each page builder returns a frozen dataclass; the route turns it into the template context with
``web.render.page_context`` on top of ``base`` (the classifier's names and REST links).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from camfleet_hub.core import urls
from camfleet_hub.datasets import crud, history, none_group, triage
from camfleet_hub.datasets import listing as datasets
from camfleet_hub.datasets import public as views
from camfleet_hub.datasets.models import Camera, Classifier, Group, Image, ImageStatus
from camfleet_hub.datasets.none_group import NonePlan
from camfleet_hub.datasets.schemas import DatasetHealth, GroupHealth, HistoryPublic, ImageDetail

MOSAIC_PAGE = 60
TRIAGE_PAGE = 60
HOTKEYS = 9
HISTORY_THUMBS = 8


@dataclass(frozen=True, slots=True)
class TreeGroup:
    """A group in tree order: its depth under the roots, its counts per status and its hotkey (1-9, or None)."""

    id: int
    name: str
    parent: str | None
    common: bool
    none_of_the_above: bool
    counts: dict[str, int]
    depth: int
    key: int | None


@dataclass(frozen=True, slots=True)
class ImageCard:
    """One thumbnail of the classifier page's mosaic."""

    id: int
    thumbnail_url: str
    status: str
    name: str


@dataclass(frozen=True, slots=True)
class ClassifierPageData:
    tree: list[TreeGroup]
    shared: list[datasets.SharedGroup]
    selected: TreeGroup | None
    mosaic: list[ImageCard]
    after: int | None
    next_after: int | None
    health: DatasetHealth
    chart: str
    none_plan: NonePlan | None  # "use the deleted images as none of the above", when there are deleted images


@dataclass(frozen=True, slots=True)
class Hotkey:
    key: int
    name: str
    none_of_the_above: bool = False


@dataclass(frozen=True, slots=True)
class RuleChoice:
    """An upload rule in the Triage filter: its value and its words."""

    value: str
    text: str


@dataclass(frozen=True, slots=True)
class TriagePageData:
    """The Triage shell; its script lists the images from the REST API."""

    tree: list[TreeGroup]
    view: str
    status: str
    page_size: int
    hotkeys: list[Hotkey]
    groups: list[str]
    rules: list[RuleChoice]
    cameras: list[str]
    rule: str | None
    camera: str | None
    filter_query: str


@dataclass(frozen=True, slots=True)
class Thumb:
    id: int
    url: str


@dataclass(frozen=True, slots=True)
class HistoryLine:
    """A history entry with thumbnails of the first images it touched."""

    entry: HistoryPublic
    thumbs: list[Thumb]


@dataclass(frozen=True, slots=True)
class HistoryPageData:
    entries: list[HistoryLine]
    before: int | None
    next_before: int | None


@dataclass(frozen=True, slots=True)
class ImagePageData:
    image: ImageDetail
    groups: list[str]


# The top-level template context every classifier page starts from (render() merges its "links" mapping).
def base(classifier: Classifier) -> dict[str, object]:
    """The names and REST links of a classifier page; its page links come from route names (``web.render``)."""
    site, clf = classifier.site.name, classifier.name
    return {
        "site": site,
        "clf": clf,
        "links": {
            "export": f"{urls.API_PREFIX}/sites/{site}/classifiers/{clf}/export",
            "api": f"{urls.API_PREFIX}/sites/{site}/classifiers/{clf}",
        },
    }


def group_tree(
    session: Session, classifier: Classifier, counts: dict[int | None, dict[str, int]] | None = None
) -> list[TreeGroup]:
    """Groups in tree order (parents before their children) with depth, counts and hotkey number.

    Counts come from ``crud.status_counts`` (one grouped count); the Triage page passes ``{}`` (names only).
    """
    counts = crud.status_counts(session, classifier) if counts is None else counts
    rows = crud.list_groups(session, classifier)
    names = {g.id: g.name for g in rows}
    children: dict[int | None, list[Group]] = {}
    for g in rows:
        parent = g.parent_id if g.parent_id in names else None
        children.setdefault(parent, []).append(g)
    out: list[TreeGroup] = []
    seen: set[int] = set()

    def walk(parent: int | None, depth: int) -> None:
        for g in children.get(parent, []):
            if g.id in seen:
                continue
            seen.add(g.id)
            row = views.group(g, names, counts.get(g.id))
            key = len(out) + 1 if len(out) < HOTKEYS else None
            out.append(
                TreeGroup(row.id, row.name, row.parent, row.common, row.none_of_the_above, row.counts, depth, key)
            )
            walk(g.id, depth + 1)

    walk(None, 0)
    return out


def bar_chart(groups: list[GroupHealth], min_to_train: int) -> str:
    """Horizontal bars of confirmed images per group (SVG); groups under the minimum drawn in amber, a none of the
    above group in grey (its images are the rejected ones, not a class people look for)."""
    if not groups:
        return ""
    bar_h, gap, left, width = 18, 6, 150, 560
    top = 8
    height = top + len(groups) * (bar_h + gap) + 20
    peak = max(max(g.images for g in groups), min_to_train, 1)
    scale = (width - left - 60) / peak
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="images per group">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
    ]
    for i, g in enumerate(groups):
        y = top + i * (bar_h + gap)
        w = g.images * scale
        colour = "#d97706" if g.images < min_to_train else "#6b7280" if g.none_of_the_above else "#2563eb"
        label = escape(g.name[:22]) + (" ⁂" if g.common else "") + (" (none)" if g.none_of_the_above else "")
        parts.append(
            f'<text x="{left - 6}" y="{y + 13}" font-size="12" text-anchor="end" fill="#1d2327">{label}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}" rx="3">'
            f"<title>{escape(g.name)}{' (none of the above)' if g.none_of_the_above else ''}: {g.images}</title></rect>"
            f'<text x="{left + w + 5:.1f}" y="{y + 13}" font-size="12" fill="#6b7280">{g.images}</text>'
        )
    x_min = left + min_to_train * scale
    parts.append(
        f'<line x1="{x_min:.1f}" y1="{top - 4}" x2="{x_min:.1f}" y2="{height - 16}" stroke="#b45309" '
        f'stroke-dasharray="4 3"/><text x="{x_min:.1f}" y="{height - 4}" font-size="11" fill="#b45309" '
        f'text-anchor="middle">min {min_to_train}</text></svg>'
    )
    return "".join(parts)


def _image_cards(rows: list[Image]) -> list[ImageCard]:
    return [
        ImageCard(img.id, urls.image_thumbnail(img.id), img.status, img.original_name or img.sha256[:12])
        for img in rows
    ]


def classifier_page(
    session: Session, classifier: Classifier, group: str | None, after: int | None
) -> ClassifierPageData:
    """Group tree, the mosaic of one group (keyset page after ``after``), the health panel."""
    counts = crud.status_counts(session, classifier)
    tree = group_tree(session, classifier, counts)
    health = datasets.health(session, classifier, counts)
    selected = next((g for g in tree if g.name == group), tree[0] if tree and group is None else None)
    mosaic: list[ImageCard] = []
    next_after = None
    if selected is not None:
        query = (
            select(Image)
            .where(
                Image.classifier_id == classifier.id,
                Image.group_id == selected.id,
                Image.status == ImageStatus.GROUP.value,
            )
            .order_by(Image.id)
            .limit(MOSAIC_PAGE + 1)
        )
        if after is not None:
            query = query.where(Image.id > after)
        rows = list(session.scalars(query))
        if len(rows) > MOSAIC_PAGE:
            rows = rows[:MOSAIC_PAGE]
            next_after = rows[-1].id
        mosaic = _image_cards(rows)
    return ClassifierPageData(
        tree=tree,
        shared=datasets.shared_common_groups(session, classifier),
        selected=selected,
        mosaic=mosaic,
        after=after,
        next_after=next_after,
        health=health,
        chart=bar_chart(health.groups, health.min_to_train),
        none_plan=none_group.plan(session, classifier) if health.deleted else None,
    )


def triage_page(
    session: Session, classifier: Classifier, view: str, rule: str | None = None, camera: str | None = None
) -> TriagePageData:
    """The shell of the Triage page: groups with their number keys, the rule / camera filter; the images come from
    the JSON listing (``/triage``, with the camera, rule and suggestion of each)."""
    deleted = view == "deleted"
    tree = group_tree(session, classifier, counts={})
    cameras = list(
        session.scalars(select(Camera.name).where(Camera.site_id == classifier.site_id).order_by(Camera.name))
    )
    rule = rule if rule in triage.RULE_WORDS else None
    camera = camera if camera in cameras else None
    query = "&".join(f"{k}={quote(v)}" for k, v in (("rule", rule), ("camera", camera)) if v)
    return TriagePageData(
        tree=tree,
        view="deleted" if deleted else "new",
        status=ImageStatus.DELETED.value if deleted else ImageStatus.NEW.value,
        page_size=TRIAGE_PAGE,
        hotkeys=[Hotkey(g.key, g.name, g.none_of_the_above) for g in tree if g.key is not None],
        groups=[g.name for g in tree],
        rules=[RuleChoice(k, v) for k, v in triage.RULE_WORDS.items()],
        cameras=cameras,
        rule=rule,
        camera=camera,
        filter_query=query,
    )


def history_page(session: Session, classifier: Classifier, before: int | None) -> HistoryPageData:
    entries = history.list_history(session, classifier, before, history.HISTORY_PAGE)
    lines = []
    for e in entries:
        row = history.history_row(e, classifier.name)
        thumbs = [Thumb(i, urls.image_thumbnail(i)) for i in row.image_ids[:HISTORY_THUMBS]]
        lines.append(HistoryLine(row, thumbs))
    more = entries[-1].id if len(entries) == history.HISTORY_PAGE else None
    return HistoryPageData(entries=lines, before=before, next_before=more)


def image_page(session: Session, image_id: int) -> tuple[ImagePageData, Classifier]:
    image = session.scalar(
        select(Image).options(joinedload(Image.blob), joinedload(Image.group)).where(Image.id == image_id)
    )
    if image is None:
        image = crud.get_image(session, image_id)  # raises the 404
    classifier = session.get(Classifier, image.classifier_id)
    assert classifier is not None
    detail = datasets.image_detail(session, image, classifier)
    groups = [g.name for g in crud.list_groups(session, classifier)]
    return ImagePageData(image=detail, groups=groups), classifier
