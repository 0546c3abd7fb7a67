/// What a Telemetry's `accessLogging` makes of one route's access log: written or not, and the
/// CEL `filter.expression` a request must meet (Envoy's CEL access-log filter). Per route and
/// reporter (`match.mode`), the most specific Telemetry that selects the route's workloads and
/// covers that mode wins (workload over namespace over the mesh's root namespace), as istiod
/// picks them for a proxy's client and server sides.
package struct AccessLogPolicy: Sendable, Equatable {
    /// `disabled: true`: no line for these requests.
    package var disabled = false
    package var filter: AccessLogFilter?
    /// `match.mode`: which reporters' requests the rule is for.
    package var reporters = Telemetry.Match().reporters

    /// Whether `record`'s line is written (the rule was picked for its reporter).
    func writes(_ record: HTTPRequestRecord) -> Bool {
        if disabled { return false }
        return filter?.holds(for: record) ?? true
    }

    /// The rule for requests `reporter` reports, from a route's rules least specific first.
    static func pick(_ policies: [AccessLogPolicy], reporter: String) -> AccessLogPolicy? {
        policies.last { $0.reporters.contains(reporter) }
    }

    /// One Telemetry's access-log rule and whom it selects.
    package struct Scoped: Sendable, Equatable {
        var namespace: String
        var selector: [String: String]?
        var policy: AccessLogPolicy
    }

    /// The Telemetries with `accessLogging`, least specific first (later ones win).
    static func compile(_ telemetries: [Telemetry], rootNamespace: String = "istio-system") -> [Scoped] {
        Telemetry.layered(telemetries, rootNamespace: rootNamespace).compactMap { telemetry in
            guard let logging = telemetry.accessLogging?.first else { return nil }
            var policy = AccessLogPolicy()
            policy.disabled = logging.disabled ?? false
            policy.filter = logging.filter?.expression.flatMap { try? AccessLogFilter(parsing: $0) }
            policy.reporters = logging.match?.reporters ?? policy.reporters
            return Scoped(namespace: telemetry.namespace, selector: telemetry.selector?.matchLabels, policy: policy)
        }
    }
}

extension RouteConfiguration {
    /// The access-log rules for requests to `service`'s workloads, least specific first (none:
    /// every request is logged); `AccessLogPolicy.pick` takes the one for a reporter.
    package func accessLogPolicies(for service: ServiceKey, endpoints: MeshEndpoints) -> [AccessLogPolicy] {
        telemetryScoped(accessLogScopes, for: service, endpoints: endpoints) { ($0.namespace, $0.selector) }.map(\.policy)
    }
}

/// The CEL that Istio users write in `accessLogging[].filter.expression`, over Envoy's request
/// attributes: `response.code`, `response.code_details`, `request.method`, `request.path`,
/// `request.url_path`, `request.host`, `request.scheme`, `request.protocol`,
/// `request.headers['x']`, `response.headers['x']`, `source.address`, `source.principal`,
/// `xds.cluster_name`; integer, string and boolean literals; `== != < <= > >=`, `&& || !`,
/// parentheses, and the string methods `startsWith`, `endsWith`, `contains`. CEL's error rules
/// hold (a missing header is an error; `||` and `&&` absorb one when the other side decides),
/// and an expression that ends in an error or a non-boolean writes no line, as Envoy's filter.
package struct AccessLogFilter: Sendable, Equatable {
    indirect enum Expression: Sendable, Equatable {
        case literal(Value)
        case attribute(Attribute)
        case not(Expression)
        case and(Expression, Expression)
        case or(Expression, Expression)
        case compare(String, Expression, Expression)
        case method(String, Expression, Expression)
    }

    enum Attribute: Sendable, Equatable {
        case responseCode, responseCodeDetails, method, path, urlPath, host, scheme, `protocol`, sourceAddress, sourcePrincipal, clusterName
        case requestHeader(String), responseHeader(String)
    }

    enum Value: Sendable, Equatable {
        case int(Int), string(String), bool(Bool), error
    }

    package struct ParseError: Error, Equatable, CustomStringConvertible {
        package var description: String
        /// Valid CEL that names an attribute or function EastWest does not evaluate (a warning),
        /// rather than text CEL rejects (an error).
        package var unsupported = false
    }

    let expression: Expression

    package init(parsing text: String) throws(ParseError) {
        var parser = Parser(text)
        expression = try parser.parseAll()
    }

    func holds(for record: HTTPRequestRecord) -> Bool {
        Self.evaluate(expression, record) == .bool(true)
    }

    static func evaluate(_ expression: Expression, _ record: HTTPRequestRecord) -> Value {
        switch expression {
        case .literal(let value): return value
        case .attribute(let attribute): return value(of: attribute, record)
        case .not(let inner):
            guard case .bool(let b) = evaluate(inner, record) else { return .error }
            return .bool(!b)
        case .and(let a, let b):
            let (x, y) = (evaluate(a, record), evaluate(b, record))
            if x == .bool(false) || y == .bool(false) { return .bool(false) }
            return x == .bool(true) && y == .bool(true) ? .bool(true) : .error
        case .or(let a, let b):
            let (x, y) = (evaluate(a, record), evaluate(b, record))
            if x == .bool(true) || y == .bool(true) { return .bool(true) }
            return x == .bool(false) && y == .bool(false) ? .bool(false) : .error
        case .compare(let op, let a, let b):
            switch (evaluate(a, record), evaluate(b, record)) {
            case (.int(let x), .int(let y)): return .bool(compare(op, x, y))
            case (.string(let x), .string(let y)): return .bool(compare(op, x, y))
            case (.bool(let x), .bool(let y)) where op == "==" || op == "!=": return .bool((x == y) == (op == "=="))
            default: return .error
            }
        case .method(let name, let target, let argument):
            guard case .string(let s) = evaluate(target, record), case .string(let arg) = evaluate(argument, record) else { return .error }
            switch name {
            case "startsWith": return .bool(s.hasPrefix(arg))
            case "endsWith": return .bool(s.hasSuffix(arg))
            default: return .bool(s.contains(arg))
            }
        }
    }

    private static func compare<T: Comparable>(_ op: String, _ x: T, _ y: T) -> Bool {
        switch op {
        case "==": x == y
        case "!=": x != y
        case "<": x < y
        case "<=": x <= y
        case ">": x > y
        default: x >= y
        }
    }

    private static func value(of attribute: Attribute, _ record: HTTPRequestRecord) -> Value {
        func text(_ value: String?) -> Value { value.map { .string($0) } ?? .error }
        switch attribute {
        case .responseCode: return .int(record.responseCode)
        case .responseCodeDetails: return text(record.responseCodeDetails)
        case .method: return .string(record.method)
        case .path: return .string(record.path)
        case .urlPath: return .string(record.path.pathWithoutQuery)
        case .host: return record.authority == "-" ? .error : .string(record.authority)
        case .scheme: return .string("https")
        case .protocol: return .string(record.protocol)
        case .sourceAddress: return .string(record.downstreamRemote)
        case .sourcePrincipal: return text(record.sourcePrincipal)
        case .clusterName: return text(record.clusterName)
        case .requestHeader(let name): return text(record.requestHeader(name))
        case .responseHeader(let name): return text(record.responseHeader(name))
        }
    }

    static let attributes: [String: Attribute] = [
        "response.code": .responseCode, "response.code_details": .responseCodeDetails, "request.method": .method,
        "request.path": .path, "request.url_path": .urlPath, "request.host": .host, "request.scheme": .scheme,
        "request.protocol": .protocol, "source.address": .sourceAddress, "source.principal": .sourcePrincipal,
        "xds.cluster_name": .clusterName,
    ]

    /// A recursive-descent parser over the expression's bytes.
    private struct Parser {
        let text: [Character]
        var index = 0

        init(_ text: String) { self.text = Array(text) }

        mutating func parseAll() throws(ParseError) -> Expression {
            let expression = try parseOr()
            skipSpace()
            guard index == text.count else { throw fail("unexpected '\(String(text[index...]))'") }
            return expression
        }

        func fail(_ message: String, unsupported: Bool = false) -> ParseError {
            ParseError(description: "CEL filter '\(String(text))': \(message)", unsupported: unsupported)
        }

        mutating func skipSpace() { while index < text.count, text[index].isWhitespace { index += 1 } }

        mutating func take(_ token: String) -> Bool {
            skipSpace()
            let characters = Array(token)
            guard index + characters.count <= text.count, Array(text[index..<index + characters.count]) == characters else { return false }
            // `<` is not `<=`, `!` is not `!=`.
            if (token == "<" || token == ">" || token == "!" || token == "=") && index + 1 < text.count && text[index + 1] == "=" { return false }
            index += characters.count
            return true
        }

        mutating func parseOr() throws(ParseError) -> Expression {
            var left = try parseAnd()
            while take("||") { left = .or(left, try parseAnd()) }
            return left
        }

        mutating func parseAnd() throws(ParseError) -> Expression {
            var left = try parseUnary()
            while take("&&") { left = .and(left, try parseUnary()) }
            return left
        }

        mutating func parseUnary() throws(ParseError) -> Expression {
            if take("!") { return .not(try parseUnary()) }
            let left = try parsePostfix()
            for op in ["==", "!=", "<=", ">=", "<", ">"] where take(op) {
                return .compare(op, left, try parsePostfix())
            }
            return left
        }

        mutating func parsePostfix() throws(ParseError) -> Expression {
            var base = try parsePrimary()
            while take(".") {
                let name = identifier()
                guard ["startsWith", "endsWith", "contains"].contains(name), take("(") else {
                    throw fail("'.\(name)' is not a method EastWest evaluates (startsWith, endsWith, contains)", unsupported: true)
                }
                let argument = try parseOr()
                guard take(")") else { throw fail("expected ')'") }
                base = .method(name, base, argument)
            }
            return base
        }

        mutating func parsePrimary() throws(ParseError) -> Expression {
            skipSpace()
            guard index < text.count else { throw fail("unexpected end") }
            if take("(") {
                let inner = try parseOr()
                guard take(")") else { throw fail("expected ')'") }
                return inner
            }
            let c = text[index]
            if c == "'" || c == "\"" { return .literal(.string(try string())) }
            if c.isNumber {
                var digits = ""
                while index < text.count, text[index].isNumber { digits.append(text[index]); index += 1 }
                return .literal(.int(Int(digits) ?? 0))
            }
            var path = identifier()
            guard !path.isEmpty else { throw fail("unexpected '\(c)'") }
            if path == "true" || path == "false" { return .literal(.bool(path == "true")) }
            // Dotted attribute names; a method call is left to parsePostfix.
            while index < text.count, text[index] == ".", index + 1 < text.count, text[index + 1].isLetter {
                let save = index
                index += 1
                let next = identifier()
                if ["startsWith", "endsWith", "contains"].contains(next) { index = save; break }
                path += "." + next
            }
            if path == "request.headers" || path == "response.headers" {
                guard take("[") else { throw fail("\(path) takes a header name: \(path)['name']") }
                skipSpace()
                let name = try string().lowercased()
                guard take("]") else { throw fail("expected ']'") }
                return .attribute(path == "request.headers" ? .requestHeader(name) : .responseHeader(name))
            }
            guard let attribute = AccessLogFilter.attributes[path] else {
                throw fail("'\(path)' is not an attribute EastWest evaluates (\(AccessLogFilter.attributes.keys.sorted().joined(separator: ", ")), request.headers['x'], response.headers['x'])", unsupported: true)
            }
            return .attribute(attribute)
        }

        mutating func identifier() -> String {
            var name = ""
            while index < text.count, text[index].isLetter || text[index].isNumber || text[index] == "_" { name.append(text[index]); index += 1 }
            return name
        }

        mutating func string() throws(ParseError) -> String {
            guard index < text.count else { throw fail("expected a string") }
            let quote = text[index]
            guard quote == "'" || quote == "\"" else { throw fail("expected a quoted string") }
            index += 1
            var value = ""
            while index < text.count, text[index] != quote {
                if text[index] == "\\", index + 1 < text.count { index += 1 }
                value.append(text[index])
                index += 1
            }
            guard index < text.count else { throw fail("unterminated string") }
            index += 1
            return value
        }
    }
}
