"""Pipeline inputs: which received instances an input takes, and when it has enough.

An :class:`Input` subclass describes one kind of data a pipeline needs (a CT
series, a PET series...): the tags an instance must have (``required_tags``),
the values some of them must match (``required_values``), how its instances are
turned into what ``process`` wants (``grinder``) and when it holds enough
(``validate``). The pipeline keeps one instance of each input class per patient.

Routing reads only the tags the inputs name, from the raw bytes as they arrive
(:attr:`Input.routing_tags`): no data set is decoded to route it.

Value matching (``required_values``, keyed by keyword or int tag):

- a plain string: equality with the element's text (multi-valued elements as
  ``"ORIGINAL\\\\PRIMARY"``); with ``*`` or ``?`` in it, a wildcard as in C-FIND;
- a number: numeric equality (IS, DS and binary numeric VRs);
- a compiled ``re.Pattern``: ``fullmatch`` of the text (``re.I`` for caseless);
- :class:`AnyOf` (or a list, tuple or set): any of the alternatives;
- :class:`Not`: the opposite (an absent element matches ``Not(...)``);
- a callable: ``predicate(value) -> bool`` with the decoded value (or None).
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import re
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from pydicom.datadict import dictionary_VR, tag_for_keyword

from aiodicom.codec.scan import text
from aiodicom.codec.uids import EXPLICIT_VR_BIG_ENDIAN
from aiodicom.codec.vr import NUMBER_CODES
from aiodicom.data.lazy import LazyDataset
from aiodicom.errors import AiodicomError, ConfigurationError
from aiodicom.grinders import Grinder, list_grinder

if TYPE_CHECKING:
    from aiodicom.pipeline.pipeline import Pipeline

__all__ = ["AnyOf", "DynamicInput", "Input", "InputFailed", "Not", "StoredInstance", "tag_number"]

#: A decoded element value as matchers see it: text, a number, or None when absent.
Value: TypeAlias = str | int | float | None

SERIES_INSTANCE_UID = 0x0020000E
STUDY_DATE = 0x00080020


def tag_number(tag: int | str) -> int:
    """A tag as an int, from an int or a DICOM keyword ("PatientID"); unknown keywords raise."""
    if isinstance(tag, int):
        return tag
    number = tag_for_keyword(tag)
    if number is None:
        raise ConfigurationError(f"unknown DICOM keyword {tag!r}")
    return int(number)


def decode_value(tag: int, raw: bytes | None, transfer_syntax: str) -> Value:
    """The first value of a binary numeric element as a number, anything else as text."""
    if raw is None:
        return None
    code = _number_code(tag)
    if code is not None:
        size = struct.calcsize(code)
        if len(raw) < size:
            return None
        order = ">" if transfer_syntax == EXPLICIT_VR_BIG_ENDIAN else "<"
        number: int | float = struct.unpack_from(order + code, raw)[0]
        return number
    return text(raw)


@functools.lru_cache(maxsize=1024)
def _number_code(tag: int) -> str | None:
    """The struct code of a binary numeric element by its dictionary VR, else None."""
    try:
        return NUMBER_CODES.get(dictionary_VR(tag))
    except KeyError:
        return None


class InputFailed(AiodicomError):
    """Raised by ``validate()``: this patient's data cannot be processed; quarantine it.

    The message says why (it goes to the quarantine record, the logs and ``status()``).
    """


@dataclass(frozen=True)
class AnyOf:
    """Matches when any of ``options`` matches (each is itself a matcher)."""

    options: tuple[object, ...]

    def __init__(self, *options: object) -> None:
        object.__setattr__(self, "options", options)


@dataclass(frozen=True)
class Not:
    """Matches when ``matcher`` does not (an absent element matches)."""

    matcher: object


def _number(value: Value) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.split("\\", 1)[0])
        except ValueError:
            return None
    return None


def matches(expected: object, value: Value) -> bool:
    """Whether a decoded element value satisfies one ``required_values`` entry."""
    return compile_matcher(expected)(value)


Matcher: TypeAlias = Callable[[Value], bool]


def compile_matcher(expected: object) -> Matcher:
    """One ``required_values`` entry as a function of the value, its kind worked out once
    (routing asks it for every instance). A bad entry raises when asked, as ever."""
    if isinstance(expected, Not):
        inner = compile_matcher(expected.matcher)
        return lambda value: not inner(value)
    options = expected.options if isinstance(expected, AnyOf) else expected
    if isinstance(options, list | tuple | set | frozenset):
        compiled = [compile_matcher(option) for option in options]
        return lambda value: any(option(value) for option in compiled)
    test = _leaf(expected)
    absent = expected is None
    return lambda value: absent if value is None else test(value)


def _leaf(expected: object) -> Callable[[str | int | float], bool]:
    """The test of a present value against a plain matcher."""
    if isinstance(expected, re.Pattern):
        pattern = expected
        return lambda value: pattern.fullmatch(str(value)) is not None
    if isinstance(expected, bool):
        return _refuse("required_values cannot match a bool; use a number or a string")
    if isinstance(expected, int | float):
        number = float(expected)
        return lambda value: _number(value) == number
    if isinstance(expected, str):
        if "*" in expected or "?" in expected:
            return lambda value: fnmatch.fnmatchcase(str(value), expected)
        return lambda value: str(value) == expected
    if callable(expected):
        predicate = expected
        return lambda value: bool(predicate(value))
    return _refuse(f"required_values: cannot match with {expected!r}")


def _refuse(message: str) -> Callable[[object], bool]:
    def refuse(_value: object) -> bool:
        raise ConfigurationError(message)

    return refuse


@dataclass(eq=False)
class StoredInstance:
    """One acknowledged instance as the pipeline keeps it: where it is and its routing tags."""

    sop_instance_uid: str
    path: Path
    transfer_syntax: str
    #: Raw values of the routing tags the data set has (absent tags are absent).
    tags: dict[int, bytes] = field(repr=False)
    size: int = 0

    def value(self, tag: int) -> Value:
        return decode_value(tag, self.tags.get(tag), self.transfer_syntax)

    def keep_values_of(self, tags: frozenset[int]) -> StoredInstance:
        """Forget the values of other tags (a PixelData presence must not keep 64 KiB per instance)."""
        self.tags = {tag: raw if tag in tags else b"" for tag, raw in self.tags.items()}
        return self


class _InputMeta(type):
    """Lets ``InputA | InputB`` build an input that takes the first alternative matching."""

    def __or__(cls, other: type) -> type[Input]:  # type: ignore[override]
        if not (isinstance(other, _InputMeta) and issubclass(cls, Input) and issubclass(other, Input)):
            return NotImplemented
        alternatives = (*_alternatives(cls), *_alternatives(other))
        name = " | ".join(alternative.__name__ for alternative in alternatives)
        return type(name, (_EitherInput,), {"alternatives": alternatives})

    def __ror__(cls, other: type) -> type[Input]:  # type: ignore[override]
        return NotImplemented


def _alternatives(cls: type[Input]) -> tuple[type[Input], ...]:
    return cls.alternatives if issubclass(cls, _EitherInput) else (cls,)


class Input(metaclass=_InputMeta):
    """One input of a pipeline, for one patient: subclass it and set the class attributes.

    ``len(input)`` is the number of instances it holds; iterating gives
    :class:`~aiodicom.data.LazyDataset` objects (headers read on first use);
    :attr:`paths` are their files.
    """

    #: Tags an instance must carry (keywords or ints), whatever their value.
    required_tags: ClassVar[Sequence[int | str]] = ()
    #: Tag (keyword or int) -> matcher (see the module docstring); all must match.
    required_values: ClassVar[Mapping[int | str, object]] = {}
    #: What ``process`` gets for this input: ``grinder(instances)`` (LazyDataset objects).
    grinder: ClassVar[Grinder] = list_grinder
    #: Run the grinder in a worker process (:func:`aiodicom.offload`), off the event loop.
    #: None: only for the known heavy grinders (numpy, NIfTI). Needs an importable grinder.
    grind_in_worker: ClassVar[bool | None] = None
    #: Take instances of one series only: the first one's SeriesInstanceUID decides.
    enforce_single_series: ClassVar[bool] = False
    #: Take instances of one study date only: the first one's StudyDate decides.
    enforce_single_study_date: ClassVar[bool] = False

    def __init__(self) -> None:
        self._instances: dict[str, StoredInstance] = {}

    # --- the pipeline's side -------------------------------------------------------------

    @classmethod
    def routing_tags(cls) -> frozenset[int]:
        """Every tag this input reads to decide (collected as instances arrive)."""
        return cls.presence_tags() | cls.value_tags()

    @classmethod
    def presence_tags(cls) -> frozenset[int]:
        """Tags whose presence alone matters (``required_tags``): their values are not kept."""
        return frozenset(tag_number(t) for t in cls.required_tags)

    @classmethod
    def value_tags(cls) -> frozenset[int]:
        """Tags whose values decide (``required_values``, the single-series/date rules)."""
        tags = {tag_number(t) for t in cls.required_values}
        if cls.enforce_single_series:
            tags.add(SERIES_INSTANCE_UID)
        if cls.enforce_single_study_date:
            tags.add(STUDY_DATE)
        return frozenset(tags)

    @classmethod
    def check(cls) -> None:
        """Fail early on a bad definition (unknown keywords, impossible matchers)."""
        cls.routing_tags()
        for expected in cls.required_values.values():
            matches(expected, "")

    @classmethod
    def _requirements(cls) -> tuple[tuple[int, ...], tuple[tuple[int, Matcher], ...]]:
        """``required_tags`` and ``required_values`` (tags as ints, matchers compiled),
        worked out once per class."""
        cached = cls.__dict__.get("_compiled_requirements")
        if cached is None:
            cached = (
                tuple(tag_number(tag) for tag in cls.required_tags),
                tuple((tag_number(tag), compile_matcher(expected)) for tag, expected in cls.required_values.items()),
            )
            cls._compiled_requirements = cached  # type: ignore[attr-defined]
        return cached  # type: ignore[no-any-return]

    def accepts(self, instance: StoredInstance) -> bool:
        """Whether this input takes ``instance`` (its tags and values, the single-X rules)."""
        tags, values = self._requirements()
        present = instance.tags
        for tag in tags:
            if tag not in present:
                return False
        for tag, matcher in values:
            if not matcher(instance.value(tag)):
                return False
        return self._same_as_first(instance)

    def _same_as_first(self, instance: StoredInstance) -> bool:
        cls = type(self)
        if not (cls.enforce_single_series or cls.enforce_single_study_date):
            return True
        first = next((i for i in self._instances.values() if i.sop_instance_uid != instance.sop_instance_uid), None)
        if first is None:
            return True
        for enforced, tag in ((cls.enforce_single_series, SERIES_INSTANCE_UID), (cls.enforce_single_study_date, STUDY_DATE)):
            if enforced and instance.value(tag) != first.value(tag):
                return False
        return True

    @classmethod
    def blank_decides(cls) -> bool:
        """Whether :meth:`accepts` depends on the instance alone (not on what the input holds):
        then routing asks a blank input once, not each patient's again."""
        single = cls.enforce_single_series or cls.enforce_single_study_date
        return cls.accepts is Input.accepts and not single and not cls.may_claim

    #: Whether :meth:`claims` may take instances no input's ``required_values`` match (then
    #: routing leaves such instances to the patient's inputs instead of refusing them).
    may_claim: ClassVar[bool] = False

    def claims(self, instance: StoredInstance) -> bool:
        """Whether ``instance`` is this input's alone (e.g. a prior it fetched): then no other
        input of the patient is offered it. Default: no."""
        return False

    def first_instance(self, pipeline: Pipeline, patient_id: str, instance: StoredInstance) -> None:
        """Called when a patient's first instance is kept (e.g. to start fetching priors)."""

    def restore(self, folder: Path) -> None:
        """After a restart, before the patient's files (in ``folder``) are routed again: read
        back what the input kept there (:meth:`Pipeline.save_input_state`). Default: nothing."""

    @property
    def busy(self) -> bool:
        """Work of this input is still running (a retrieval): counted in ``status().retrieving``."""
        return False

    def add(self, instance: StoredInstance) -> None:
        """Keep ``instance``; one with the SOP Instance UID of an earlier one replaces it."""
        self._instances.pop(instance.sop_instance_uid, None)
        self._instances[instance.sop_instance_uid] = instance

    def discard(self, sop_instance_uid: str) -> None:
        self._instances.pop(sop_instance_uid, None)

    def moved(self, folder: Path) -> None:
        """The instances' files were moved into ``folder`` (same names)."""
        for instance in self._instances.values():
            instance.path = folder / instance.path.name

    def grind_offloaded(self) -> bool:
        setting = type(self).grind_in_worker
        if setting is not None:
            return setting
        module = getattr(type(self).grinder, "__module__", "") or ""
        return module in ("aiodicom.grinders.numpy", "aiodicom.grinders.nifti")

    def grind_job(self) -> tuple[Callable[[Any], object], object]:
        """The grinding as a picklable function and its argument (file paths)."""
        return _GrindPaths(type(self).grinder), [str(p) for p in self.paths]

    def datasets_view(self) -> object:
        """What ``container.datasets[name]`` holds: the instances as LazyDataset objects."""
        return list(self)

    # --- the user's side -----------------------------------------------------------------

    def validate(self) -> bool | Awaitable[bool]:
        """Whether the input holds enough to process (may be ``async def``): override it.

        The default is "at least one instance". Called when an association that sent
        data for the patient is released and no other is still sending for it.
        """
        return len(self) > 0

    @property
    def instances(self) -> list[StoredInstance]:
        """What the input holds, in arrival order."""
        return list(self._instances.values())

    @property
    def paths(self) -> list[Path]:
        """The instances' files, in arrival order."""
        return [instance.path for instance in self._instances.values()]

    def __len__(self) -> int:
        return len(self._instances)

    def __iter__(self) -> Iterator[LazyDataset]:
        return (LazyDataset(instance.path) for instance in list(self._instances.values()))


@dataclass(frozen=True)
class _GrindPaths:
    """``grinder([LazyDataset(path) ...])``, picklable for a worker process."""

    grinder: Callable[[list[LazyDataset]], object]

    def __call__(self, paths: list[str]) -> object:
        return self.grinder([LazyDataset(path) for path in paths])


class DynamicInput(Input):
    """Several series (or whatever ``separator_tag`` tells apart) in one input.

    ``process`` gets ``{separator value: grinder(instances with that value)}``, and
    ``container.datasets[name]`` the instances grouped the same way.
    """

    #: The tag whose value splits the instances into groups.
    separator_tag: ClassVar[int | str] = "SeriesInstanceUID"

    @classmethod
    def value_tags(cls) -> frozenset[int]:
        return super().value_tags() | {tag_number(cls.separator_tag)}

    def groups(self) -> dict[str, list[StoredInstance]]:
        """The instances by separator value, in arrival order."""
        tag = tag_number(type(self).separator_tag)
        grouped: dict[str, list[StoredInstance]] = {}
        for instance in self._instances.values():
            grouped.setdefault(str(instance.value(tag) or ""), []).append(instance)
        return grouped

    def grind_job(self) -> tuple[Callable[[Any], object], object]:
        groups = {key: [str(i.path) for i in members] for key, members in self.groups().items()}
        return _GrindGroups(type(self).grinder), groups

    def datasets_view(self) -> object:
        return {key: [LazyDataset(i.path) for i in members] for key, members in self.groups().items()}


@dataclass(frozen=True)
class _GrindGroups:
    grinder: Callable[[list[LazyDataset]], object]

    def __call__(self, groups: dict[str, list[str]]) -> object:
        return {key: self.grinder([LazyDataset(p) for p in paths]) for key, paths in groups.items()}


class _EitherInput(Input):
    """``InputA | InputB``: each instance goes to the first alternative that takes it; the
    input validates when one alternative does, and that one (the first, in order) is used."""

    alternatives: ClassVar[tuple[type[Input], ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.members = [alternative() for alternative in type(self).alternatives]
        self.chosen: Input | None = None

    @classmethod
    def presence_tags(cls) -> frozenset[int]:
        return frozenset().union(*(alternative.presence_tags() for alternative in cls.alternatives))

    @classmethod
    def value_tags(cls) -> frozenset[int]:
        return frozenset().union(*(alternative.value_tags() for alternative in cls.alternatives))

    @classmethod
    def check(cls) -> None:
        for alternative in cls.alternatives:
            alternative.check()

    def accepts(self, instance: StoredInstance) -> bool:
        return any(member.accepts(instance) for member in self.members)

    @classmethod
    def blank_decides(cls) -> bool:
        plain = cls.accepts is _EitherInput.accepts and not cls.may_claim
        return plain and bool(cls.alternatives) and all(a.blank_decides() for a in cls.alternatives)

    def add(self, instance: StoredInstance) -> None:
        self.discard(instance.sop_instance_uid)
        member = next(member for member in self.members if member.accepts(instance))
        member.add(instance)
        self._instances[instance.sop_instance_uid] = instance

    def discard(self, sop_instance_uid: str) -> None:
        super().discard(sop_instance_uid)
        for member in self.members:
            member.discard(sop_instance_uid)

    def moved(self, folder: Path) -> None:
        super().moved(folder)  # the members share the same StoredInstance objects

    async def validate_async(self) -> bool:
        for member in self.members:
            if len(member) and await resolve(member.validate()):
                self.chosen = member
                return True
        return False

    def validate(self) -> Awaitable[bool]:
        return self.validate_async()

    def _use(self) -> Input:
        return self.chosen or next((m for m in self.members if len(m)), self.members[0])

    def grind_offloaded(self) -> bool:
        return self._use().grind_offloaded()

    def grind_job(self) -> tuple[Callable[[Any], object], object]:
        return self._use().grind_job()

    def datasets_view(self) -> object:
        return self._use().datasets_view()


async def resolve(result: bool | Awaitable[bool]) -> bool:
    """The value of a ``validate()`` that may be plain or ``async def``."""
    if inspect.isawaitable(result):
        return bool(await result)
    return bool(result)

