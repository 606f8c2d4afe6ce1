"""What a validation found: one ``CheckResult`` per check, gathered in a report.

Checks are functions that return lists of results (``Checks`` collects them while a
check runs); ``validation.validate`` puts every list, the resolved contract and the
ops of each signature into one ``ValidationReport`` at the end. Nothing a check
finds is stored on an object as a side effect.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class CheckResult:
    check: str
    signature: str  # None for checks about the whole export
    ok: bool
    detail: str

    def __str__(self):
        where = f"[{self.signature}] " if self.signature else ""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.check:<13} {where}{self.detail}"


def first_difference(a, b, rtol, atol):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    bad = ~np.isclose(a, b, rtol=rtol, atol=atol)
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return (
        f"max |diff| = {np.max(np.abs(a - b)):.3g} (rtol={rtol}, atol={atol}); first at "
        f"index {index}: {a[index]:.6g} vs {b[index]:.6g}"
    )


class Checks:
    """The results of one check function, in the order found."""

    def __init__(self):
        self.results = []

    def add(self, check, ok, detail, signature=None):
        self.results.append(CheckResult(check, signature, bool(ok), detail))
        return ok

    def compare(self, check, signature, got, want, rtol, atol, what):
        """allclose (equality when rtol = atol = 0) per output key; one result."""
        problems = []
        for key in sorted(want):
            if key not in got:
                problems.append(f"{key} missing")
                continue
            a, b = np.asarray(got[key]), np.asarray(want[key])
            if a.shape != b.shape:
                problems.append(f"{key} has shape {a.shape} vs {b.shape}")
            elif not np.allclose(a, b, rtol=rtol, atol=atol):
                problems.append(f"{key} differs: {first_difference(a, b, rtol, atol)}")
        if problems:
            return self.add(check, False, f"{what}: " + "; ".join(problems), signature)
        how = "equal" if rtol == 0 and atol == 0 else "allclose"
        return self.add(check, True, f"{what}: {how} on {sorted(want)}", signature)


@dataclasses.dataclass(frozen=True)
class ExportContract:
    """What an export is, as read from its files: kind, shapes, signatures and their specs."""

    kind: str
    decoder_only: bool
    latent_dim: int
    data_shape: tuple
    specs: dict  # signature name -> contract.SignatureSpec, in the table's order

    @property
    def signatures(self):
        return tuple(self.specs)


class ValidationReport:
    """The results of every check run on one version directory."""

    def __init__(self, version_dir, results=(), contract=None, ops=None):
        self.version_dir = version_dir
        self.results = list(results)
        self.contract = contract
        self.ops = dict(ops or {})  # signature -> sorted op types it runs
        self.not_written = False  # set by the exporter when validation stops an export

    kind = property(lambda self: self.contract and self.contract.kind)
    decoder_only = property(lambda self: self.contract and self.contract.decoder_only)
    latent_dim = property(lambda self: self.contract and self.contract.latent_dim)
    data_shape = property(lambda self: self.contract and self.contract.data_shape)
    signatures = property(lambda self: self.contract.signatures if self.contract else ())

    @property
    def ok(self):
        return all(r.ok for r in self.results)

    @property
    def failures(self):
        return [r for r in self.results if not r.ok]

    def failure_message(self):
        lines = [f"Validation of {self.version_dir} failed ({len(self.failures)} check(s)):"]
        if self.not_written:
            lines[0] = lines[0][:-1] + "; the version was not written:"
        lines += [f"  {r}" for r in self.failures]
        return "\n".join(lines)

    def __str__(self):
        head = (
            f"Validation of {self.version_dir}: {'PASSED' if self.ok else 'FAILED'} "
            f"({len(self.results) - len(self.failures)}/{len(self.results)} checks passed)"
        )
        facts = []
        if self.kind:
            facts.append(
                f"  kind={self.kind} decoder_only={self.decoder_only} latent_dim={self.latent_dim} "
                f"data_shape={self.data_shape} signatures={list(self.signatures)}"
            )
        return "\n".join([head, *facts, *(f"  {r}" for r in self.results)])


class ValidationError(Exception):
    """An export broke the contract; ``report`` holds every check's result."""

    def __init__(self, report):
        self.report = report
        super().__init__(report.failure_message())
