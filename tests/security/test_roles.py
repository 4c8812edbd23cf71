"""Roles are ordered, weakest first; operators and admins see every tenant."""

from __future__ import annotations

import pytest

from tierserve.errors import InvalidInput
from tierserve.security.roles import Role


def test_roles_are_ordered_weakest_first() -> None:
    assert Role.READER < Role.USER < Role.OPERATOR < Role.ADMIN
    assert sorted(Role) == [Role.READER, Role.USER, Role.OPERATOR, Role.ADMIN]


@pytest.mark.parametrize("raw", ["admin", "ADMIN", "Admin"])
def test_parse_ignores_case(raw: str) -> None:
    assert Role.parse(raw) is Role.ADMIN


@pytest.mark.parametrize("raw", ["root", "", None, 4, "reader ", "adm\u0131n", "ADM\u0130N", "admin\n"])
def test_parse_rejects_unknown_roles(raw: object) -> None:
    with pytest.raises(InvalidInput, match="unknown role"):
        Role.parse(raw)


def test_only_operators_and_admins_see_every_tenant() -> None:
    assert [r.sees_all_tenants for r in Role] == [False, False, True, True]


def test_str_is_the_lowercase_name() -> None:
    assert [str(r) for r in Role] == ["reader", "user", "operator", "admin"]
