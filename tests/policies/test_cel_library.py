"""The gate's CEL environment (policies/formats/cel): compile errors, and every Kubernetes library function
it provides, with the results cel-go gives in Kubernetes."""

from __future__ import annotations

import pytest

from policies.formats import FormatError
from policies.formats.cel import CelError, CelEvalError, compile_expression

OBJ = {
    "metadata": {"name": "web", "labels": {"app": "shop"}},
    "spec": {"replicas": 3, "containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
}


def run(source: str, **activation: object) -> object:
    activation = activation or {"object": OBJ}
    return compile_expression(source, ["object", "params", "variables"], lazy=["variables"]).evaluate(
        activation
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # core, evaluated by the Rust crate
        ("object.spec.replicas <= 5", True),
        ("object.spec.containers.all(c, c.image.startsWith('registry.example.com/'))", True),
        ("has(object.metadata.labels) && 'app' in object.metadata.labels", True),
        ("object.metadata.name.matches('^[a-z0-9-]+$')", True),
        ("object.spec.replicas > 2.5", True),  # cross-type numeric comparison, as in Kubernetes
        # lists
        ("[1, 2, 3].isSorted() && !['b', 'a'].isSorted()", True),
        ("[1, 2, 3].sum()", 6),
        ("[1.5, 2.5].sum()", 4.0),
        ("[].sum()", 0),
        ("[3, 1, 2].min()", 1),
        ("[3, 1, 2].max()", 3),
        ("['a', 'b', 'a'].indexOf('a')", 0),
        ("['a', 'b', 'a'].lastIndexOf('a')", 2),
        ("[1, 2].indexOf(5)", -1),
        # regex
        ("'abc123def456'.find('[0-9]+')", "123"),
        ("'abc'.find('[0-9]+')", ""),
        ("'abc123def456'.findAll('[0-9]+')", ["123", "456"]),
        ("'a1b2c3'.findAll('[0-9]', 2)", ["1", "2"]),
        # strings extension
        ("'AbC'.lowerAscii() + 'x'.upperAscii()", "abcX"),
        ("'a,b,c'.split(',')", ["a", "b", "c"]),
        ("'a,b,c'.split(',', 2)", ["a", "b,c"]),
        ("['x', 'y'].join('-') + ['z'].join()", "x-yz"),
        ("'hello'.charAt(1)", "e"),
        ("'abcb'.indexOf('b') + 'abcb'.lastIndexOf('b')", 4),
        ("'hello'.substring(1, 3) + 'hello'.substring(3)", "ello"),
        ("'a-b-c'.replace('-', '+', 1)", "a+b-c"),
        ("'  pad '.trim()", "pad"),
        ("'abc'.reverse()", "cba"),
        ("strings.quote('say \"hi\"')", '"say \\"hi\\""'),
        # format
        ("'%s has %d replicas'.format([object.metadata.name, object.spec.replicas])", "web has 3 replicas"),
        ("'%.2f|%x|%X|%o|%b|%%'.format([1.5, 255, 255, 8, 5])", "1.50|ff|FF|10|101|%"),
        ("'%s'.format([['a', 1, true]])", "[a, 1, true]"),
        # quantity
        ("quantity('1Gi') == quantity('1024Mi')", True),
        ("quantity('1Gi').compareTo(quantity('512Mi'))", 1),
        ("quantity('500m').add(1).isGreaterThan(quantity('1'))", True),
        ("quantity('2').sub(quantity('500m')).asApproximateFloat()", 1.5),
        ("quantity('1k').asInteger()", 1000),
        ("quantity('1.5').isInteger() || quantity('-3').sign() != -1", False),
        ("quantity('1e3').isLessThan(quantity('1001'))", True),
        ("isQuantity('10Gi') && !isQuantity('ten')", True),
        # URL
        ("url('https://example.com:8443/a/b?x=1&x=2').getScheme()", "https"),
        ("url('https://example.com:8443/a/b').getHost()", "example.com:8443"),
        ("url('https://[::1]:80/').getHostname()", "::1"),
        ("url('https://example.com:8443/').getPort()", "8443"),
        ("url('https://example.com/a b').getEscapedPath()", "/a%20b"),
        ("url('https://example.com/?x=1&x=2&y=').getQuery()", {"x": ["1", "2"], "y": [""]}),
        ("isURL('/relative/path') && !isURL('example.com')", True),
        # IP and CIDR
        ("ip('10.0.0.1').family() == 4 && ip('2001:db8::1').family() == 6", True),
        ("ip('127.0.0.1').isLoopback() && ip('0.0.0.0').isUnspecified()", True),
        ("ip('10.0.0.1').isGlobalUnicast() && !ip('169.254.1.1').isGlobalUnicast()", True),
        ("ip('169.254.1.1').isLinkLocalUnicast() && ip('224.0.0.1').isLinkLocalMulticast()", True),
        ("ip.isCanonical('2001:db8::1') && !ip.isCanonical('2001:DB8::1')", True),
        ("isIP('1.2.3.4') && !isIP('1.2.3') && !isIP('::ffff:1.2.3.4')", True),
        ("string(ip('10.0.0.1'))", "10.0.0.1"),
        ("cidr('10.0.0.0/8').containsIP('10.1.2.3') && !cidr('10.0.0.0/8').containsIP(ip('11.0.0.1'))", True),
        ("cidr('10.0.0.0/8').containsCIDR('10.1.0.0/16')", True),
        (
            "string(cidr('10.1.2.3/8').masked()) + ' ' + string(cidr('10.1.2.3/8').ip())",
            "10.0.0.0/8 10.1.2.3",
        ),
        ("cidr('10.0.0.0/8').prefixLength()", 8),
        ("isCIDR('10.0.0.0/8') && !isCIDR('10.0.0.0')", True),
        # optional
        ("object.?spec.?replicas.orValue(1)", 3),
        ("object.?spec.?missing.orValue(1)", 1),
        ("object.?spec.missing.deeper.orValue('none')", "none"),
        ("object.?metadata.labels['app'].orValue('-')", "shop"),
        ("object.spec.containers[?3].hasValue()", False),
        ("optional.of(1).hasValue() && !optional.none().hasValue()", True),
        ("optional.none().orValue(5) + optional.of(1).value()", 6),
        # string() and cel.bind
        ("string(object.spec.replicas) + 'x'", "3x"),
        ("cel.bind(n, object.spec.replicas, n * n)", 9),
    ],
)
def test_function_results(source: str, expected: object) -> None:
    assert run(source) == expected


def test_lazy_variables_are_read_only_when_reached() -> None:
    reads: list[str] = []

    class Lazy(dict[str, object]):
        def __getitem__(self, key: str) -> object:
            reads.append(key)
            return super().__getitem__(key)

    variables = Lazy(cheap=1, costly=2)
    program = compile_expression(
        "variables.cheap == 1 || variables.costly == 2", ["variables"], lazy=["variables"]
    )
    assert program.evaluate({"variables": variables}) is True
    assert reads == ["cheap"]


@pytest.mark.parametrize(
    ("source", "message", "line", "column"),
    [
        ("object.spec.replicas <=", "Syntax error", 1, 24),
        ("object.?spec\n  .replicas +* 2", "Syntax error", 2, 14),
        ("nope.spec == 1", "undeclared reference to 'nope'", 1, 1),
        ("object.spec.frobnicate(1)", "undeclared reference to 'frobnicate'", 1, 13),
        (
            "authorizer.group('apps').resource('deployments').check('create').allowed()",
            "'authorizer' is not available",
            1,
            1,
        ),
        ("math.greatest(1, 2) > 0", "the CEL library 'math' is not available", 1, 1),
    ],
)
def test_compile_errors_name_the_position(source: str, message: str, line: int, column: int) -> None:
    with pytest.raises(CelError) as caught:
        compile_expression(source, ["object"])
    assert message in str(caught.value)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert isinstance(caught.value, FormatError)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("object.spec.missing == 1", "no such key: missing"),
        ("quantity('ten')", "quantities must match the regular expression"),
        ("quantity('1.5').asInteger()", "cannot convert value to integer"),
        ("url('example.com')", "invalid URI for request"),
        ("ip('::ffff:1.2.3.4')", "IPv4-mapped IPv6 address"),
        ("[].max()", "max called on empty list"),
        ("'%d'.format(['x'])", "decimal clause can only be used on integers"),
        ("'abc'.substring(2, 1)", "invalid substring range"),
    ],
)
def test_runtime_errors(source: str, message: str) -> None:
    with pytest.raises(CelEvalError) as caught:
        run(source)
    assert message in str(caught.value)
