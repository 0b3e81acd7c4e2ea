"""X2Edit's ``task`` field -> our normalised categories.

What the published data holds (third-party loaders that read all 6,026,214 pairs; the official
generation scripts in github OPPO-Mente-Lab/X2Edit ``data_pipeline/*.py``): ``task`` has 583
distinct values. Fifteen canonical English ones cover 99.8% of the rows: the twelve edit tasks
below plus three subject-driven *generation* tasks (``portrait``, ``portrait_editing``,
``personalized_generation``, about 1.5M rows) whose source is a separate subject image, not the
image being edited. The other 568 values (11,876 rows) are labels the generating VLM wrote
freely: the prompts' own Chinese names (``文字更改``, ``人物修图`` ...), the loader's aliases
(``tone_transfer``, ``Camera Move Editing``, ``Reasoning Editing`` ...), typos
(``camrea_move_editing``), stray punctuation (``-tone_transfer``) and one-off Chinese labels
(``证件照生成``, ``打光``).

So a task maps, in order: exactly (after normalising case, spaces, hyphens and edge punctuation),
then to the closest known spelling (typos), then by English keywords, then by Chinese keywords,
else ``other``. :func:`canonical_task` also names the canonical task, which is what
``datasets.x2edit.exclude_tasks`` is matched against.
"""
from __future__ import annotations

import difflib
import re

from stages.ingest.image_edit_common import keyword_category

# canonical task -> category
CANONICAL: dict[str, str] = {
    "action_change": "action",
    "background_change": "background",
    "camera_movement": "camera",
    "color_change": "color",
    "material_change": "local_change",
    "reasoning": "reasoning",
    "style_change": "style",
    "subject_addition": "add",
    "subject_deletion": "remove",
    "subject_replacement": "replace",
    "text_change": "text",
    "tone_transform": "tone",
    # subject-driven generation: not an edit of the source image (excluded by default)
    "portrait": "subject_driven",
    "portrait_editing": "subject_driven",
    "personalized_generation": "subject_driven",
}
SUBJECT_DRIVEN = ("portrait", "portrait_editing", "personalized_generation")

# Known spellings -> canonical task: the official training loader's aliases
# (src/custom_dataset_qwen.py ``to_type_id``), the generation prompts' labels, and Chinese names.
ALIASES: dict[str, str] = {
    **{k: "subject_deletion" for k in (
        "removal", "remove", "delete", "deletion", "object_removal", "objectremoval", "watermarkremoval",
        "snowremoval", "subject_removal", "删除主体", "删除", "移除", "去除")},
    **{k: "subject_addition" for k in ("addition", "add", "add_object", "subject_add", "添加主体", "添加", "增加主体")},
    **{k: "subject_replacement" for k in (
        "replace", "replace_object", "swap", "subject_replace", "replacement", "替换主体", "替换")},
    **{k: "style_change" for k in (
        "style", "change_style", "style_transfer", "style_edit", "风格更改", "风格迁移", "风格转换")},
    **{k: "background_change" for k in ("change_background", "background", "background_swap", "背景更改", "背景替换")},
    **{k: "color_change" for k in ("color_alter", "change_color", "colorization", "colour_change", "颜色更改")},
    **{k: "material_change" for k in (
        "material_alter", "visual_material_change", "change_material", "material", "材料更改", "材质更改")},
    **{k: "action_change" for k in ("motion_change", "action", "pose_change", "动作更改", "动作修改")},
    **{k: "text_change" for k in ("textual_change", "text", "text_edit", "文字更改", "文字修改")},
    **{k: "tone_transform" for k in (
        "tone_transfer", "tune_transfer", "tone_change", "tone", "色调变换", "色调迁移", "色调更改", "打光")},
    **{k: "camera_movement" for k in (
        "camera_move_editing", "camera_move", "camera_motion", "movement", "rotation_change", "resize",
        "viewpoint_change", "相机移动", "镜头移动", "视角变换")},
    **{k: "reasoning" for k in (
        "reasoning_editing", "complex_reasoning", "implicit_change", "relation", "relation_change",
        "复杂推理", "推理编辑")},
    **{k: "portrait" for k in ("证件照生成", "人像生成", "肖像生成", "写真生成")},
    **{k: "personalized_generation" for k in ("subject", "subject_driven", "subject_generation", "主体生成")},
    # A person in the source image retouched: an edit of that image, not subject-driven generation.
    "人物修图": "portrait_retouch",
}
# Tasks that are edits but have no canonical X2Edit name of their own.
EXTRA_CATEGORIES = {"portrait_retouch": "local_change", "ps_human": "local_change",
                    "appearance_alter": "local_change", "change_expression": "local_change"}
ALIASES.update({k: k for k in EXTRA_CATEGORIES})

_KNOWN = sorted(set(CANONICAL) | set(ALIASES))

# Chinese keywords for the free-form labels (first match wins).
_ZH_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("证件照|肖像|人像生成|写真", "portrait"),
    ("文字|字体|标题", "text_change"),
    ("删除|移除|去除|去掉", "subject_deletion"),
    ("替换|更换主体", "subject_replacement"),
    ("添加|增加|加入", "subject_addition"),
    ("背景", "background_change"),
    ("风格|画风", "style_change"),
    ("色调|光照|打光|滤镜|天气|季节", "tone_transform"),
    ("颜色|色彩|上色", "color_change"),
    ("材质|材料|纹理", "material_change"),
    ("表情|换装|服装|衣服|发型|妆|修图|美颜", "portrait_retouch"),
    ("动作|姿势|姿态", "action_change"),
    ("修复|去噪|增强|清晰|去雾", "tone_transform"),
    ("视角|相机|镜头|旋转|缩放", "camera_movement"),
    ("推理", "reasoning"),
)


def task_key(task: str) -> str:
    """Case, spaces, hyphens and edge punctuation normalised: ``" -Tone Transfer."`` ->
    ``tone_transfer``."""
    key = re.sub(r"[\s\-/]+", "_", task.strip().lower())
    return key.strip("_.,;:!?'\"()[]{}。，、！？：；“”‘’（）")


def canonical_task(task: str | None) -> str | None:
    """The canonical task ``task`` names (one of CANONICAL or EXTRA_CATEGORIES), None if unknown."""
    if not task or not task.strip():
        return None
    key = task_key(task)
    if key in CANONICAL:
        return key
    if key in ALIASES:
        return ALIASES[key]
    if key.isascii():
        close = difflib.get_close_matches(key, _KNOWN, n=1, cutoff=0.85)  # typos: camrea_move
        if close:
            return close[0] if close[0] in CANONICAL else ALIASES[close[0]]
        return None
    for pattern, canonical in _ZH_KEYWORDS:
        if re.search(pattern, key):
            return canonical
    return None


def task_category(task: str | None) -> str:
    """The normalised category of a published ``task`` (``other`` when nothing matches)."""
    canonical = canonical_task(task)
    if canonical is not None:
        return CANONICAL.get(canonical) or EXTRA_CATEGORIES[canonical]
    return keyword_category(task) if task else "other"


__all__ = ["ALIASES", "CANONICAL", "SUBJECT_DRIVEN", "canonical_task", "task_category", "task_key"]
