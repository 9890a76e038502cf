"""Records: classes with fields declared by annotations, without ``@dataclass``.

``@dataclass`` compiles an ``__init__``, ``__repr__`` and ``__eq__`` per class when the
module is imported; for the ~40 PDU, event and message classes of the network path that
was about a quarter of ``aiodicom echo``'s start-up. A record class is built by a
metaclass that only reads its annotations (no code generation): ``__slots__`` hold the
fields, one generic ``__init__`` binds positional and keyword arguments, and equality,
hash and ``repr`` go over the fields in order. Type checkers see dataclasses
(``dataclass_transform``), so constructors and attributes stay statically typed.

:class:`Record` is mutable (as ``@dataclass(slots=True)``), :class:`FrozenRecord`
immutable and hashable (as ``@dataclass(frozen=True, slots=True)``). What else of
dataclasses the package uses is here too: ``field(default_factory=..., compare=False)``,
``__post_init__``, :func:`replace` (also ``copy.replace`` on 3.13), pickling and copying.
Every class a one-shot command imports is a record, so ``dataclasses`` (and the
~1 ms per class it costs at import) stays out of ``aiodicom echo``/``store``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Final, Self, TypeVar, cast, dataclass_transform

__all__ = ["FrozenRecord", "FrozenRecordError", "Record", "field", "replace"]

_T = TypeVar("_T")


class FrozenRecordError(AttributeError):
    """A frozen record's field was assigned or deleted (use :func:`replace`)."""


class _Factory:
    """A default built anew for each record (a list, say), as ``default_factory``."""

    __slots__ = ("make", "compare")

    def __init__(self, make: Callable[[], object], compare: bool) -> None:
        self.make = make
        self.compare = compare


def field(*, default_factory: Callable[[], _T], compare: bool = True) -> _T:
    """A field whose default is ``default_factory()``, made for each record.

    ``compare=False`` leaves the field out of equality and hash, as in
    :func:`dataclasses.field` (a timestamp or a counter riding along with an identity).
    """
    return cast(_T, _Factory(default_factory, compare))


_UNSET: Final = object()


class _RecordType(type):
    def __new__(
        mcls, name: str, bases: tuple[type, ...], namespace: dict[str, object]
    ) -> _RecordType:
        annotations = namespace.get("__annotations__", {})
        assert isinstance(annotations, dict)
        names = tuple(n for n, kind in annotations.items() if not str(kind).startswith("ClassVar"))
        with_default = [n in namespace for n in names]
        if with_default != sorted(with_default):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        defaults = [namespace.pop(n) for n in names if n in namespace]
        compared = tuple(
            n for n, d in zip(names[len(names) - len(defaults) :], defaults, strict=True)
            if isinstance(d, _Factory) and not d.compare
        )
        namespace["__slots__"] = names
        namespace["__match_args__"] = names
        cls = super().__new__(mcls, name, bases, namespace)
        cls._field_names = names  # type: ignore[attr-defined]
        cls._compared_names = tuple(n for n in names if n not in compared)  # type: ignore[attr-defined]
        cls._required_count = len(names) - len(defaults)  # type: ignore[attr-defined]
        cls._defaults = tuple(defaults)  # type: ignore[attr-defined]
        return cls


@dataclass_transform(field_specifiers=(field,))
class _MutableRecordType(_RecordType):
    """Metaclass of :class:`Record` (what type checkers read as ``@dataclass``)."""


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class _FrozenRecordType(_RecordType):
    """Metaclass of :class:`FrozenRecord` (read as ``@dataclass(frozen=True)``)."""


class _Base:
    __slots__ = ()
    _field_names: ClassVar[tuple[str, ...]] = ()
    _compared_names: ClassVar[tuple[str, ...]] = ()
    _required_count: ClassVar[int] = 0
    _defaults: ClassVar[tuple[object, ...]] = ()

    def __init__(self, *args: object, **kwargs: object) -> None:
        # The first construction compiles this class's own ``__init__`` (what
        # ``@dataclass`` does at import, done only for classes that are used) and
        # delegates to it; later ones call it directly: decoders build records per PDU.
        type(self).__init__ = _compile_init(type(self))  # type: ignore[method-assign]
        type(self).__init__(self, *args, **kwargs)

    def _set(self, values: Sequence[object]) -> None:
        """Store all field values, in order (subclasses may convert them here)."""
        setter = object.__setattr__
        for name, value in zip(self._field_names, values, strict=True):
            setter(self, name, value)

    @classmethod
    def _from_values(cls, values: Sequence[object]) -> Self:
        """Build from all field values in order, without argument binding (decoders)."""
        record = cls.__new__(cls)
        record._set(values)
        return record

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._field_names)

    def _key(self) -> tuple[object, ...]:
        """The values equality and hash go by (all but ``compare=False`` fields)."""
        return tuple(getattr(self, name) for name in self._compared_names)

    def _asdict(self) -> dict[str, object]:
        """Field name -> value, in order (a shallow :func:`dataclasses.asdict`)."""
        return dict(zip(self._field_names, self._values(), strict=True))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Base)
        return self._key() == other._key()

    # Pickle and copy by field values: the default would restore the slots with
    # setattr, which a frozen record refuses.
    def __getstate__(self) -> tuple[object, ...]:
        return self._values()

    def __setstate__(self, state: tuple[object, ...]) -> None:
        self._set(state)

    def __replace__(self, **changes: object) -> Self:
        """``copy.replace(record, field=value)`` (Python 3.13), as for a dataclass."""
        return replace(self, **changes)

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._field_names)
        return f"{type(self).__name__}({fields})"


class Record(_Base, metaclass=_MutableRecordType):
    """A mutable record (unhashable, as a mutable dataclass)."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]


class FrozenRecord(_Base, metaclass=_FrozenRecordType):
    """An immutable, hashable record."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenRecordError(f"cannot assign to field {name!r} of a {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise FrozenRecordError(f"cannot delete field {name!r} of a {type(self).__name__}")

    def __hash__(self) -> int:
        return hash((type(self), self._key()))


_R = TypeVar("_R", bound=_Base)


def _compile_init(cls: type[_Base]) -> Callable[..., None]:
    """An ``__init__`` with ``cls``'s own signature: positional or keyword, defaults."""
    names = cls._field_names
    required = cls._required_count
    env: dict[str, object] = {"_UNSET": _UNSET, "_setter": object.__setattr__}
    params, prologue = ["self"], []
    for index, name in enumerate(names):
        if index < required:
            params.append(name)
            continue
        default = cls._defaults[index - required]
        env[f"_d_{name}"] = default
        if isinstance(default, _Factory):
            params.append(f"{name}=_UNSET")
            prologue.append(f" if {name} is _UNSET: {name} = _d_{name}.make()")
        else:
            params.append(f"{name}=_d_{name}")
    overrides_set = next(k for k in cls.__mro__ if "_set" in k.__dict__) is not _Base
    if overrides_set:
        body = [f" self._set(({''.join(n + ', ' for n in names)}))"]
    elif issubclass(cls, FrozenRecord):
        body = [f" _setter(self, {n!r}, {n})" for n in names] or [" pass"]
    else:
        body = [f" self.{n} = {n}" for n in names] or [" pass"]
    if hasattr(cls, "__post_init__"):
        body.append(" self.__post_init__()")
    source = f"def __init__({', '.join(params)}):\n" + "\n".join(prologue + body) + "\n"
    exec(source, env)  # noqa: S102 - built from the class's own field names only
    init = env["__init__"]
    assert callable(init)
    return cast(Callable[..., None], init)


def replace(record: _R, **changes: object) -> _R:
    """A copy of ``record`` with ``changes`` applied (as :func:`dataclasses.replace`)."""
    values = [
        changes.pop(name, value)
        for name, value in zip(record._field_names, record._values(), strict=True)
    ]
    if changes:
        raise TypeError(f"{type(record).__name__} has no field {next(iter(changes))!r}")
    copy = record._from_values(values)
    if hasattr(copy, "__post_init__"):
        copy.__post_init__()
    return copy
