"""The one confusion-matrix renderer (hub report and trainer eval): decodes, scales, two hues, odd shapes."""

import io

import pytest
from PIL import Image

from camfleet_contract.charts import MAX_CLASSES, RIGHT, WRONG, confusion_image, confusion_png, shown_classes


def _decode(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    assert img.format == "PNG"
    return img.convert("RGB")


def _grid(img: Image.Image) -> tuple[int, int, int]:
    """(left, top, cell) of the grid: its top border is the first long run of the grid-line colour (anti-aliased
    text has single pixels of that grey, never a run)."""
    px = img.load()
    assert px is not None
    grid = (220, 220, 220)
    for y in range(img.height):
        for left in range(img.width - 16):
            if all(px[x, y] == grid for x in range(left, left + 16)):
                right = next(x for x in range(left + 2, img.width) if px[x, y + 2] == grid)
                return left, y, right - left + 1
    raise AssertionError("no grid found")


def _centre_colour(img: Image.Image, row: int, col: int) -> tuple[int, int, int]:
    """The colour of a cell away from its number (a corner just inside the border)."""
    left, top, cell = _grid(img)
    px = img.load()
    assert px is not None
    value = px[left + col * cell + 3, top + row * cell + 3]
    assert isinstance(value, tuple)
    return value[0], value[1], value[2]


def test_png_decodes_and_diagonal_and_errors_have_different_hues() -> None:
    matrix = [[8, 2, 0], [1, 9, 0], [0, 5, 5]]
    img = _decode(confusion_png(matrix, ["dress", "hat", "shoes"]))
    assert img.width > 3 * 44 and img.height > 3 * 44
    assert _centre_colour(img, 0, 0) != (255, 255, 255)  # right: shaded
    right, wrong = _centre_colour(img, 2, 2), _centre_colour(img, 2, 1)  # both 50% of their row
    assert right[2] > right[0] and wrong[0] > wrong[2]  # blue-ish vs red-ish
    assert _centre_colour(img, 0, 2) == (255, 255, 255)  # no count: white
    # the same share gives the same depth of colour in each hue: 8/10 right is darker than 2/10 wrong is
    assert sum(_centre_colour(img, 0, 0)) < sum(_centre_colour(img, 0, 1))
    assert RIGHT != WRONG


def test_size_grows_with_classes() -> None:
    sizes = []
    for n in (1, 3, 8, 20):
        matrix = [[5 if i == j else 1 for j in range(n)] for i in range(n)]
        img = _decode(confusion_png(matrix, [f"class {i}" for i in range(n)]))
        sizes.append((img.width, img.height))
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(sizes, sizes[1:], strict=False))


def test_one_class_and_twenty_classes_with_long_names() -> None:
    one = _decode(confusion_png([[7]], ["only"]))
    assert _centre_colour(one, 0, 0) == RIGHT  # all of the row right: full blue
    names = [f"a rather long class name number {i}" for i in range(20)]
    matrix = [[10 if i == j else (1 if j == (i + 1) % 20 else 0) for j in range(20)] for i in range(20)]
    img = confusion_image(matrix, names)
    assert img.width < 2000 and img.height < 2000  # names shortened, not drawn at full length
    wrapped = _centre_colour(img, 19, 0)  # the last class mistaken for the first: a light red
    assert wrapped != (255, 255, 255) and wrapped[0] > wrapped[2]


def test_an_empty_row_is_white_not_an_error() -> None:
    img = confusion_image([[4, 1], [0, 0]], ["cat", "dog"])
    assert _centre_colour(img, 1, 0) == (255, 255, 255) and _centre_colour(img, 1, 1) == (255, 255, 255)
    assert _centre_colour(img, 0, 0) != (255, 255, 255)


def test_a_big_matrix_draws_only_the_classes_in_play() -> None:
    n = 1000
    matrix = [[0] * n for _ in range(n)]
    matrix[7][7], matrix[7][400], matrix[12][12] = 3, 1, 2
    assert shown_classes(matrix) == [7, 12, 400]
    img = confusion_image(matrix, [f"class{i}" for i in range(n)])
    assert img.width < 600 and img.height < 600
    assert len(shown_classes([[0] * 40 for _ in range(40)])) == MAX_CLASSES  # nothing counted: still a picture


@pytest.mark.parametrize(
    ("matrix", "classes", "field"),
    [([[1, 2], [3, 4]], ["a", "b", "c"], "matrix"), ([], [], "classes"), ([[1, -1], [0, 1]], ["a", "b"], "matrix")],
)
def test_bad_shapes_are_refused_by_name(matrix: list[list[int]], classes: list[str], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        confusion_png(matrix, classes)


def test_long_names_keep_their_distinguishing_ends() -> None:
    from camfleet_contract.charts import MAX_NAME, _short

    short = [_short(f"a rather long class name number {i}") for i in (1, 11)]
    assert all(len(s) == MAX_NAME for s in short) and short[0] != short[1]
    assert short[1].endswith("number 11") and "…" in short[1]
