import Foundation
import NIOHTTP1

/// What route matching sees of one HTTP request. Matchers name headers in lower case; a
/// request's header names are compared without regard to case (HTTP/1.1 clients send either).
package struct HTTPRequestFacts: Sendable {
    package var method: String
    /// The path as sent, query string included.
    package var path: String { didSet { pathWithoutQuery = Self.withoutQuery(path) } }
    /// `Host` / `:authority` as sent, port included.
    package var authority: String
    package var scheme: String
    /// As received: names are compared without regard to case, so nothing is lower-cased per request.
    package var headers: HTTPHeaders
    /// The namespace of the client's SPIFFE ID, when it has one (`sourceNamespace`).
    package var sourceNamespace: String?

    package init(method: String, path: String, authority: String, scheme: String = "https",
                 headers: HTTPHeaders = [:], sourceNamespace: String? = nil) {
        self.method = method; self.path = path; self.authority = authority; self.scheme = scheme
        pathWithoutQuery = Self.withoutQuery(path)
        self.headers = headers; self.sourceNamespace = sourceNamespace
    }

    package func header(_ name: String) -> String? { headers.first(name: name) }

    /// The path without its query string: what `uri` matches compare (Envoy's `:path` match).
    /// Taken once per request: every `uri` rule reads it.
    private(set) var pathWithoutQuery: Substring

    private static func withoutQuery(_ path: String) -> Substring { path.firstIndex(of: "?").map { path[..<$0] } ?? path[...] }

    func queryParameter(_ name: String) -> String? {
        guard let query = path.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.first.map(String.init) == name { return parts.count > 1 ? String(parts[1]) : "" }
        }
        return nil
    }
}

/// A regular expression matched as RE2 does in Envoy: the whole string must match.
package struct FullMatchRegex: @unchecked Sendable, Equatable {
    package let pattern: String
    // NSRegularExpression is immutable and documented thread-safe.
    private let expression: NSRegularExpression
    /// What every full match starts with (`/items/` of `/items/[0-9]+`): a string without it is
    /// refused by one comparison instead of a regex run, which is most of the rules a request
    /// does not match.
    let literalPrefix: String

    package init(_ pattern: String, caseInsensitive: Bool = false) throws {
        self.pattern = pattern
        expression = try NSRegularExpression(pattern: "^(?:\(pattern))$", options: caseInsensitive ? [.caseInsensitive] : [])
        literalPrefix = caseInsensitive ? "" : Self.literalPrefix(of: pattern)
    }

    package func matches(_ text: some StringProtocol) -> Bool {
        guard text.utf8.starts(with: literalPrefix.utf8) else { return false }
        let string = String(text)
        return expression.firstMatch(in: string, options: [.anchored], range: NSRange(string.startIndex..., in: string)) != nil
    }

    /// The literal characters a pattern starts with, conservatively: none when it alternates
    /// anywhere (`a|b`) or sets flags; a literal followed by a quantifier (`ab?`) is not part of it.
    static func literalPrefix(of pattern: String) -> String {
        if pattern.contains("|") || pattern.hasPrefix("(?") { return "" }
        var prefix: [Character] = []
        var characters = Array(pattern)[...]
        while let character = characters.first {
            var literal: Character
            if character == "\\" {
                // An escaped punctuation mark is itself; `\d`, `\w`, … are classes.
                guard characters.count > 1, let next = characters.dropFirst().first, next.isPunctuation || next.isSymbol else { break }
                literal = next
                characters = characters.dropFirst(2)
            } else if "[](){}.*+?^$".contains(character) {
                break
            } else {
                literal = character
                characters = characters.dropFirst()
            }
            if let next = characters.first, "*?{".contains(next) { break }  // the literal may be absent
            prefix.append(literal)
            if let next = characters.first, next == "+" { break }  // it may repeat: later ones shift
        }
        return String(prefix)
    }

    package static func == (a: FullMatchRegex, b: FullMatchRegex) -> Bool { a.pattern == b.pattern }
}

/// One compiled Istio StringMatch.
package enum StringMatcher: Sendable, Equatable {
    case exact(String, ignoreCase: Bool)
    case prefix(String, ignoreCase: Bool)
    case regex(FullMatchRegex)
    /// `{}`: the value is present, whatever it is.
    case present
    /// Envoy's own StringMatcher kinds (rate-limit header matchers), beyond Istio's three.
    case suffix(String, ignoreCase: Bool)
    case contains(String, ignoreCase: Bool)

    /// Byte for byte, as Envoy's StringMatcher compares (no Unicode canonical equivalence, which
    /// Swift's `==` and `hasPrefix` apply and which cost a grapheme walk per rule).
    package func matches(_ value: some StringProtocol) -> Bool {
        switch self {
        case .exact(let expected, let ignoreCase):
            ignoreCase ? value.lowercased().utf8.elementsEqual(expected.lowercased().utf8) : value.utf8.elementsEqual(expected.utf8)
        case .prefix(let prefix, let ignoreCase):
            ignoreCase ? value.lowercased().utf8.starts(with: prefix.lowercased().utf8) : value.utf8.starts(with: prefix.utf8)
        case .regex(let regex): regex.matches(value)
        case .present: true
        case .suffix(let suffix, let ignoreCase):
            ignoreCase ? value.lowercased().utf8.reversed().starts(with: suffix.lowercased().utf8.reversed()) : value.utf8.reversed().starts(with: suffix.utf8.reversed())
        case .contains(let part, let ignoreCase):
            ignoreCase ? value.lowercased().contains(part.lowercased()) : value.utf8.firstRange(of: part.utf8) != nil
        }
    }
}

/// One HTTPMatchRequest, compiled: every condition must hold (AND).
package struct RequestMatch: Sendable, Equatable {
    package var name: String?
    package var uri: StringMatcher?
    package var scheme: StringMatcher?
    package var method: StringMatcher?
    package var authority: StringMatcher?
    package var headers: [(name: String, match: StringMatcher)] = []
    package var withoutHeaders: [(name: String, match: StringMatcher)] = []
    package var queryParams: [(name: String, match: StringMatcher)] = []
    package var port: Int?
    package var sourceNamespace: String?

    package init() {}

    package func matches(_ request: HTTPRequestFacts, port listenerPort: Int?) -> Bool {
        if let uri, !uri.matches(request.pathWithoutQuery) { return false }
        if let scheme, !scheme.matches(request.scheme) { return false }
        if let method, !method.matches(request.method) { return false }
        if let authority, !authority.matches(request.authority) { return false }
        if let port, port != listenerPort { return false }
        if let sourceNamespace, sourceNamespace != request.sourceNamespace { return false }
        for (name, match) in headers {
            guard let value = request.header(name), match.matches(value) else { return false }
        }
        // Envoy's invert_match with treat_missing_header_as_empty: an absent header is "",
        // so `{x: {exact: a}}` holds when x is missing; `{x: {}}` means "x absent".
        for (name, match) in withoutHeaders {
            let value = request.header(name)
            if case .present = match { if value != nil { return false } } else if match.matches(value ?? "") { return false }
        }
        for (name, match) in queryParams {
            guard let value = request.queryParameter(name), match.matches(value) else { return false }
        }
        return true
    }

    package static func == (a: RequestMatch, b: RequestMatch) -> Bool {
        a.name == b.name && a.uri == b.uri && a.scheme == b.scheme && a.method == b.method && a.authority == b.authority
            && a.port == b.port && a.sourceNamespace == b.sourceNamespace
            && a.headers.elementsEqual(b.headers, by: { $0.name == $1.name && $0.match == $1.match })
            && a.withoutHeaders.elementsEqual(b.withoutHeaders, by: { $0.name == $1.name && $0.match == $1.match })
            && a.queryParams.elementsEqual(b.queryParams, by: { $0.name == $1.name && $0.match == $1.match })
    }
}

/// Header changes of Istio's `headers:` (set overwrites, add appends, remove drops).
package struct HeaderOperations: Sendable, Equatable {
    package var set: [(name: String, value: String)] = []
    package var add: [(name: String, value: String)] = []
    package var remove: [String] = []

    package init() {}

    package var isEmpty: Bool { self.set.isEmpty && add.isEmpty && remove.isEmpty }

    package func apply(to headers: inout HTTPHeaders) {
        for name in remove { headers.remove(name: name) }
        for (name, _) in self.set { headers.remove(name: name) }
        for (name, value) in self.set { headers.add(name: name, value: value) }
        for (name, value) in add { headers.add(name: name, value: value) }
    }

    /// This, then `other` (per-destination operations after the rule's).
    package func then(_ other: HeaderOperations) -> HeaderOperations {
        var merged = self
        merged.set += other.set; merged.add += other.add; merged.remove += other.remove
        return merged
    }

    package static func == (a: HeaderOperations, b: HeaderOperations) -> Bool {
        a.remove == b.remove && a.set.elementsEqual(b.set, by: { $0 == $1 }) && a.add.elementsEqual(b.add, by: { $0 == $1 })
    }
}

/// Where a matched request goes: a service (port given or the service's only one), a subset.
package struct HTTPDestination: Sendable, Equatable {
    package var host: String
    package var port: Int?
    package var subset: String?
    package var weight: Int
    package var requestHeaders = HeaderOperations()
    package var responseHeaders = HeaderOperations()

    package init(host: String, port: Int? = nil, subset: String? = nil, weight: Int) {
        self.host = host; self.port = port; self.subset = subset; self.weight = weight
    }
}

/// What a matched rule does: forward to its destinations, or answer itself.
package enum HTTPRuleAction: Sendable, Equatable {
    case route
    /// `redirect`: a 3xx with a `location` built from the request and these parts.
    case redirect(HTTPRedirectAction)
    /// `directResponse`: this status and body.
    case directResponse(status: Int, body: [UInt8])
}

package struct HTTPRedirectAction: Sendable, Equatable {
    package var path: String?
    package var authority: String?
    package var port: Int?
    /// `derivePort: FROM_REQUEST_PORT`: the port the request came in on.
    package var portFromRequest = false
    /// `derivePort: FROM_PROTOCOL_DEFAULT`: no port in the location.
    package var protocolDefaultPort = false
    package var scheme: String?
    package var code: Int = 301

    package init() {}
}

/// `rewrite`, compiled: the path by the matched prefix (Envoy's `prefix_rewrite`) or by a
/// regex (`regex_rewrite`, every match replaced), and the authority.
package struct HTTPRewriteAction: Sendable, Equatable {
    package var uri: String?
    package var regex: RegexRewrite?
    package var authority: String?

    package init() {}

    package struct RegexRewrite: @unchecked Sendable, Equatable {
        package let pattern: String
        package let template: String
        // NSRegularExpression is immutable and documented thread-safe.
        private let expression: NSRegularExpression

        /// RE2's `\1` substitutions become NSRegularExpression's `$1`.
        package init(pattern: String, rewrite: String) throws {
            self.pattern = pattern
            expression = try NSRegularExpression(pattern: pattern)
            var template = ""
            var escaped = false
            for character in rewrite {
                if escaped {
                    template += character.isNumber ? "$\(character)" : "\\\(character)"
                    escaped = false
                } else if character == "\\" {
                    escaped = true
                } else {
                    template += character == "$" ? "\\$" : String(character)
                }
            }
            self.template = template
        }

        package func apply(to path: String) -> String {
            expression.stringByReplacingMatches(in: path, range: NSRange(path.startIndex..., in: path), withTemplate: template)
        }

        package static func == (a: RegexRewrite, b: RegexRewrite) -> Bool { a.pattern == b.pattern && a.template == b.template }
    }

    /// The path upstream gets for `path` (query string kept), the rule having matched with `uri`.
    package func rewrittenPath(_ path: String, matchedBy: StringMatcher?) -> String? {
        let parts = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let pathOnly = String(parts.first ?? ""), query = parts.count > 1 ? "?" + parts[1] : ""
        if let uri = self.uri {
            // An exact match is replaced whole, a prefix match's prefix; without one Istio's
            // route matches the prefix "/", so that is what is replaced ("/v1" + "foo").
            if case .exact? = matchedBy { return uri + query }
            var prefixLength = 1
            if case .prefix(let prefix, _)? = matchedBy { prefixLength = prefix.count }
            return uri + pathOnly.dropFirst(min(prefixLength, pathOnly.count)) + query
        }
        if let regex { return regex.apply(to: pathOnly) + query }
        return nil
    }
}

/// One Envoy route: an `http[]` rule with one of its `match[]` entries (or none: catch-all).
package struct HTTPRouteRule: Sendable, Equatable {
    /// Envoy's route name: `http.name[.match.name]`.
    package var name: String
    /// The VirtualService and where the rule is written, for `eastwest route` and the log.
    package var origin: String
    package var match: RequestMatch?
    /// Weight-0 destinations already dropped; one entry means no weighted choice.
    package var destinations: [HTTPDestination]
    package var requestHeaders = HeaderOperations()
    package var responseHeaders = HeaderOperations()
    package var action = HTTPRuleAction.route
    package var rewrite: HTTPRewriteAction?
    /// From the whole request received to the whole response; nil: none (Istio's default).
    package var timeout: Duration?
    /// The rule's `retries`, or Istio's default policy.
    package var retry = RetryPolicy.istioDefault
    package var fault: FaultInjection?
    /// Where copies of the request go, each for its share of requests.
    package var mirrors: [RequestMirror] = []

    package init(name: String, origin: String, match: RequestMatch?, destinations: [HTTPDestination]) {
        self.name = name; self.origin = origin; self.match = match; self.destinations = destinations
    }

}

/// One `tcp:` route of a VirtualService, compiled: it holds for a connection to `port` (any
/// when nil) from a client in `sourceNamespace` (any when nil), for any of its match blocks.
package struct TCPRouteRule: Sendable, Equatable {
    package struct Match: Sendable, Equatable {
        package var port: Int?
        package var sourceNamespace: String?
    }

    /// Empty: every connection.
    package var matches: [Match]
    /// Weight-0 destinations already dropped.
    package var destinations: [HTTPDestination]
    package var origin: String

    package func holds(port: Int, sourceNamespace: String?) -> Bool {
        matches.isEmpty || matches.contains { ($0.port ?? port) == port && ($0.sourceNamespace.map { $0 == sourceNamespace } ?? true) }
    }
}

extension HTTPDestination {
    /// Envoy's weighted pick (`random % total`, the first cumulative range holding it).
    static func pick(_ destinations: [HTTPDestination], random: UInt64) -> HTTPDestination? {
        guard var chosen = destinations.first else { return nil }
        let total = destinations.reduce(0) { $0 + $1.weight }
        if destinations.count > 1, total > 0 {
            var point = Int(random % UInt64(total))
            for destination in destinations {
                if point < destination.weight { chosen = destination; break }
                point -= destination.weight
            }
        }
        return chosen
    }
}

/// The routes of one host, in order: the first whose match holds wins (Envoy's virtual host).
package struct HTTPRouteTable: Sendable, Equatable {
    package var rules: [HTTPRouteRule]

    package init(rules: [HTTPRouteRule]) { self.rules = rules }

    package struct Decision: Sendable, Equatable {
        package var rule: HTTPRouteRule
        /// Nil when the rule answers itself (redirect, direct response).
        package var destination: HTTPDestination?
        package var ruleIndex: Int
    }

    /// The rule for `request` and, among its destinations, the one `random` picks by weight
    /// (Envoy: `random % total`, the first cumulative range holding it). Nil: Envoy's 404 NR.
    package func route(_ request: HTTPRequestFacts, port: Int?, random: UInt64) -> Decision? {
        // By index: a rule is not copied (with all its strings and destinations) to be tested,
        // only the one that holds is. (Its match still is, by `perf`: ~2 % of a 50-rule table.)
        for index in rules.indices where rules[index].match?.matches(request, port: port) ?? true {
            let rule = rules[index]
            guard case .route = rule.action else { return Decision(rule: rule, destination: nil, ruleIndex: index) }
            guard let chosen = HTTPDestination.pick(rule.destinations, random: random) else { return nil }
            return Decision(rule: rule, destination: chosen, ruleIndex: index)
        }
        return nil
    }
}
