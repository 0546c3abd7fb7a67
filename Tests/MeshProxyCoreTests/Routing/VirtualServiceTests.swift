import Foundation
import NIOHTTP1
import Testing
@testable import MeshProxyCore

/// VirtualService loading, compiling and matching, with Istio's Bookinfo routing as users paste it.
@Suite("VirtualService routing")
struct VirtualServiceTests {
    /// The error text loading `yaml` gives; an issue when it loads.
    func rejection(of yaml: String, file: String, sourceLocation: SourceLocation = #_sourceLocation) -> String {
        do {
            _ = try IstioPolicyLoader.load(yaml: yaml, file: file)
            Issue.record("\(file) loaded", sourceLocation: sourceLocation)
            return ""
        } catch {
            return error.description
        }
    }

    static let reviews = "reviews.default.svc.cluster.local"

    /// Istio's Bookinfo routing files as users paste them (Tests/Fixtures/bookinfo, named as in
    /// samples/bookinfo/networking).
    static func bookinfo(_ name: String) -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("Fixtures/bookinfo/\(name).yaml"), encoding: .utf8)) ?? ""
    }
    static let reviewsRule = bookinfo("destination-rule-reviews")
    static let ninetyTen = bookinfo("virtual-service-reviews-90-10")
    static let jason = bookinfo("virtual-service-reviews-jason-v2-v3")

    func compiled(_ yaml: String) throws -> RouteConfiguration {
        let loaded = try IstioPolicyLoader.load(yaml: yaml + "\n---\n" + Self.reviewsRule, file: "policy.yaml")
        var config = RouteConfiguration(localCluster: "east")
        var draft = PolicyCompiler.Draft()
        for step in PolicyCompiler.kinds { step.compile(loaded, &draft) }
        config = RouteConfiguration(localCluster: "east", destinationRules: draft.destinationRules, httpRoutes: draft.httpRoutes)
        return config
    }

    func request(_ path: String = "/reviews/0", headers: [(String, String)] = [], host: String = "reviews:9080") -> HTTPRequestFacts {
        HTTPRequestFacts(method: "GET", path: path, authority: host, headers: HTTPHeaders(headers.map { ($0.0, $0.1) }))
    }

    @Test("90/10: short names resolve in the namespace; shares follow the weights over any 1000 draws")
    func ninetyTenShares() throws {
        let routes = try compiled(Self.ninetyTen)
        let table = try #require(routes.httpRoutes(for: "reviews.default.svc.cluster.local:9080"))
        #expect(routes.httpRoutes(for: "reviews") == nil, "a short Host is not the FQDN")
        var mixer = SplitMix64(seed: 7)
        var counts: [String: Int] = [:]
        for _ in 0..<1000 {
            let decision = try #require(table.route(request(host: Self.reviews), port: nil, random: mixer.next()))
            #expect(decision.destination?.host == Self.reviews)
            counts[decision.destination?.subset ?? "-", default: 0] += 1
        }
        // Binomial(1000, 0.1): 4 standard deviations either side is 62...138.
        #expect((62...138).contains(counts["v2", default: 0]), "\(counts)")
        #expect(counts["v1", default: 0] + counts["v2", default: 0] == 1000)
        // The subsets are the DestinationRule's (written with the short name).
        #expect(routes.selector(host: Self.reviews, subset: "v2") == ["version": "v2"])
    }

    @Test("jason → v2, everyone else → v3: header names compare lower-case, values exactly")
    func headerRouting() throws {
        let table = try #require(try compiled(Self.jason).httpRoutes(for: Self.reviews))
        #expect(table.route(request(headers: [("end-user", "jason")]), port: nil, random: 0)?.destination?.subset == "v2")
        #expect(table.route(request(headers: [("end-user", "Jason")]), port: nil, random: 0)?.destination?.subset == "v3")
        #expect(table.route(request(), port: nil, random: 0)?.destination?.subset == "v3")
        #expect(table.route(request(), port: nil, random: 0)?.rule.origin == "VirtualService default/reviews http[1] (policy.yaml:17)")
    }

    @Test("Every match field: uri exact/prefix/regex (whole path, no query), ignoreUriCase, method, authority, query, withoutHeaders, presence")
    func matchFields() throws {
        let yaml = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: m, namespace: shop}
            spec:
              hosts: ["*.example.com", ratings]
              http:
              - name: exact
                match: [{uri: {exact: /a}, method: {exact: POST}}]
                route: [{destination: {host: exact-svc}}]
              - name: regex
                match: [{uri: {regex: "/v[0-9]+/items"}}]
                route: [{destination: {host: regex-svc}}]
              - name: case
                match: [{uri: {prefix: /Upper}, ignoreUriCase: true}]
                route: [{destination: {host: case-svc}}]
              - name: query
                match: [{queryParams: {debug: {exact: "1"}}}]
                route: [{destination: {host: query-svc}}]
              - name: absent
                match: [{withoutHeaders: {x-canary: {}}, authority: {prefix: shop.}}]
                route: [{destination: {host: stable}}]
              - name: ua
                match: [{headers: {user-agent: {regex: ".*Firefox.*"}}}, {headers: {x-beta: {}}}]
                route: [{destination: {host: ab-svc}}]
              - route: [{destination: {host: default-svc}}]
            """
        let loaded = try IstioPolicyLoader.load(yaml: yaml, file: "m.yaml")
        let routes = RouteConfiguration(localCluster: "east", httpRoutes: VirtualServiceCompiler.compile(loaded.virtualServices, origins: loaded.virtualServiceOrigins))
        let wildcard = try #require(routes.httpRoutes(for: "a.b.example.com"))
        #expect(routes.httpRoutes(for: "ratings.shop.svc.cluster.local") == wildcard)
        func destination(_ method: String = "GET", _ path: String, host: String = "x.example.com", _ headers: [(String, String)] = []) -> String? {
            wildcard.route(HTTPRequestFacts(method: method, path: path, authority: host, headers: HTTPHeaders(headers.map { ($0.0, $0.1) })),
                           port: nil, random: 0)?.destination?.host.split(separator: ".").first.map(String.init)
        }
        #expect(destination("POST", "/a?x=1") == "exact-svc")
        #expect(destination("GET", "/a") == "default-svc")
        #expect(destination("GET", "/v12/items?page=2") == "regex-svc")
        #expect(destination("GET", "/v12/items/3") == "default-svc", "regex is a full match")
        #expect(destination("GET", "/upperCASE/x") == "case-svc")
        #expect(destination("GET", "/z?debug=1") == "query-svc")
        #expect(destination("GET", "/z", host: "shop.example.com") == "stable")
        #expect(destination("GET", "/z", host: "shop.example.com", [("x-canary", "")]) == "default-svc")
        #expect(destination("GET", "/z", [("user-agent", "Mozilla/5.0 Firefox/120")]) == "ab-svc")
        #expect(destination("GET", "/z", [("x-beta", "")]) == "ab-svc", "OR across match blocks; {} is presence")
        #expect(destination("GET", "/z") == "default-svc")
    }

    @Test("Catch-alls end their VirtualService; merged VirtualServices keep order with catch-alls last")
    func catchAllOrder() throws {
        let yaml = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: first}
            spec:
              hosts: [reviews]
              http:
              - route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /never}}]
              - route: [{destination: {host: reviews, subset: v9}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: second}
            spec:
              hosts: [reviews]
              http:
              - match: [{uri: {prefix: /beta}}]
                route: [{destination: {host: reviews, subset: v3}}]
            """
        // The middle rule has no route: Istio rejects it — the whole file is refused, with its position.
        #expect(throws: ConfigErrors.self) { try IstioPolicyLoader.load(yaml: yaml, file: "vs.yaml") }
        do {
            _ = try IstioPolicyLoader.load(yaml: yaml, file: "vs.yaml")
        } catch {
            #expect(error.description.contains("vs.yaml:8:"), "\(error)")
        }
        let valid = yaml.replacingOccurrences(of: "  - match: [{uri: {prefix: /never}}]\n", with: "")
        let loaded = try IstioPolicyLoader.load(yaml: valid, file: "vs.yaml")
        let table = try #require(VirtualServiceCompiler.compile(loaded.virtualServices, origins: loaded.virtualServiceOrigins)[Self.reviews])
        #expect(table.rules.map { $0.destinations.first?.subset } == ["v3", "v1"])
    }

    @Test("rewrite (matched prefix, exact path, the '/' of a rule without uri match, regex with \\1), redirect locations, direct responses")
    func rewriteRedirectDirect() throws {
        let yaml = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: r}
            spec:
              hosts: [ratings]
              http:
              - match: [{uri: {prefix: /old/}}]
                rewrite: {uri: /new/, authority: ratings-v2.default.svc.cluster.local}
                route: [{destination: {host: ratings}}]
              - match: [{uri: {exact: /exact}}]
                rewrite: {uri: /replaced}
                route: [{destination: {host: ratings}}]
              - match: [{uri: {regex: "/users/[0-9]+/.*"}}]
                rewrite: {uriRegexRewrite: {match: "^/users/([0-9]+)/(.*)$", rewrite: '/u/\\2?id=\\1'}}
                route: [{destination: {host: ratings}}]
              - match: [{headers: {x-v1: {}}}]
                rewrite: {uri: /v1}
                route: [{destination: {host: ratings}}]
              - match: [{uri: {prefix: /moved}}]
                redirect: {uri: /here, authority: new.example.com}
              - match: [{uri: {prefix: /secure}}]
                redirect: {scheme: https, port: 443, redirectCode: 308}
              - match: [{uri: {prefix: /port}}]
                redirect: {derivePort: FROM_REQUEST_PORT}
              - match: [{uri: {prefix: /teapot}}]
                directResponse: {status: 418, body: {string: "short and stout"}}
              - match: [{uri: {prefix: /bin}}]
                directResponse: {status: 200, body: {bytes: "AAEC"}}
              - route: [{destination: {host: ratings}}]
            """
        let loaded = try IstioPolicyLoader.load(yaml: yaml, file: "r.yaml")
        #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
        let routes = RouteConfiguration(localCluster: "east", httpRoutes: VirtualServiceCompiler.compile(loaded.virtualServices, origins: loaded.virtualServiceOrigins))
        let services = TestServices(ports: ["ratings.default.svc.cluster.local": [9080]])
        let connection = Route(service: ServiceKey(host: "ratings.default.svc.cluster.local", port: 9080), subset: nil, selector: [:])
        func decide(_ path: String, _ headers: [(String, String)] = []) -> HTTPRequestRouter.Decision {
            HTTPRequestRouter.decide(HTTPRequestFacts(method: "GET", path: path, authority: "ratings.default.svc.cluster.local:15443", headers: HTTPHeaders(headers)),
                                     connectionRoute: connection, routes: routes, services: services, listenerPort: 15443, random: 0)
        }
        func forward(_ path: String, _ headers: [(String, String)] = []) -> HTTPRequestRouter.Forward? {
            if case .forward(let forward) = decide(path, headers) { return forward }
            return nil
        }
        func reply(_ path: String) -> HTTPLocalReply? {
            if case .reply(let reply) = decide(path) { return reply }
            return nil
        }
        #expect(forward("/old/a/b?q=1")?.path == "/new/a/b?q=1")
        #expect(forward("/old/a")?.authority == "ratings-v2.default.svc.cluster.local")
        #expect(forward("/exact?x")?.path == "/replaced?x")
        #expect(forward("/users/42/profile")?.path == "/u/profile?id=42")
        #expect(forward("/foo", [("x-v1", "")])?.path == "/v1foo", "Envoy replaces the route's '/' prefix")
        #expect(forward("/other")?.path == nil && forward("/other")?.authority == nil)
        #expect(reply("/moved/x?a=1").map { ($0.status.code, $0.headers.first { $0.name == "location" }?.value) } ?? (0, nil)
                == (301, "https://new.example.com/here?a=1"))
        #expect(reply("/secure/x")?.headers.first { $0.name == "location" }?.value == "https://ratings.default.svc.cluster.local/secure/x")
        #expect(reply("/secure/x")?.status.code == 308 && reply("/secure/x")?.flags.isEmpty == true)
        #expect(reply("/port")?.headers.first { $0.name == "location" }?.value == "https://ratings.default.svc.cluster.local:15443/port")
        #expect(reply("/teapot").map { ($0.status.code, $0.body) } ?? (0, "") == (418, "short and stout"))
        #expect(reply("/bin")?.payload == [0, 1, 2])

        let conflicting = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: c}
            spec:
              hosts: [ratings]
              http:
              - redirect: {uri: /x}
                route: [{destination: {host: ratings}}]
              - directResponse: {status: 700}
              - rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}
                route: [{destination: {host: ratings}}]
              - name: nothing
            """
        do {
            _ = try IstioPolicyLoader.load(yaml: conflicting, file: "c.yaml")
            Issue.record("loaded")
        } catch {
            let text = error.description
            #expect(text.contains("c.yaml:7:") && text.contains("a redirect cannot be combined"), "\(text)")
            #expect(text.contains("c.yaml:9:") && text.contains("status must be 200-599"), "\(text)")
            #expect(text.contains("c.yaml:10:") && text.contains("not both"), "\(text)")
            #expect(text.contains("needs a 'route', a 'redirect' or a 'directResponse'"), "\(text)")
        }
    }

    /// The head of a VirtualService for `db` in namespace `shop`, down to its hosts (5 lines).
    static let db = """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: db, namespace: shop}
        spec:
          hosts: [db]

        """

    @Test("tcp: routes by destination port and client namespace, first holding wins; sourceLabels name the gateway's own labels")
    func tcpRoutes() throws {
        let loaded = try IstioPolicyLoader.load(yaml: Self.db + """
              tcp:
              - match: [{port: 5432, sourceNamespace: batch}]
                route: [{destination: {host: db, subset: replica}}]
              - match: [{port: 5432, sourceLabels: {istio: eastwestgateway}}]
                route: [{destination: {host: db, subset: primary}}]
              - match: [{port: 5432, sourceLabels: {app: x}}]
                route: [{destination: {host: db, subset: never}}]
            """, file: "db.yaml")
        #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
        let routes = RouteConfiguration(localCluster: "east", tcpRoutes: VirtualServiceCompiler.compileTCP(loaded.virtualServices, proxyLabels: ["istio": "eastwestgateway"]))
        let db = ServiceKey(host: "db.shop.svc.cluster.local", port: 5432)
        #expect(routes.tcpRoute(for: db, sourceNamespace: "batch", random: 0)?.destination.subset == "replica")
        #expect(routes.tcpRoute(for: db, sourceNamespace: "web", random: 0)?.destination.subset == "primary")
        #expect(routes.tcpRoute(for: ServiceKey(host: db.host, port: 6432), sourceNamespace: nil, random: 0) == nil)
        // tls: rules for the server name come before the tcp: rules; the SNI must be one of the hosts.
        let tls = try IstioPolicyLoader.load(yaml: Self.db + """
              tcp:
              - route: [{destination: {host: db, subset: primary}}]
              tls:
              - match: [{sniHosts: [db], port: 5432}]
                route: [{destination: {host: db, subset: replica}}]
            """, file: "tls.yaml")
        let tlsRoutes = RouteConfiguration(localCluster: "east", tcpRoutes: VirtualServiceCompiler.compileTCP(tls.virtualServices))
        #expect(tlsRoutes.tcpRoute(for: db, sourceNamespace: nil, random: 0)?.rule.origin == "VirtualService shop/db tls[0]")
        #expect(tlsRoutes.tcpRoute(for: ServiceKey(host: db.host, port: 6432), sourceNamespace: nil, random: 0)?.destination.subset == "primary")
        let invalid = rejection(of: Self.db + """
              tls:
              - match: [{sniHosts: [other.example.com]}]
                route: [{destination: {host: db}}]
              - match: [{port: 443}]
                route: [{destination: {host: db}, headers: {request: {set: {x: y}}}}]
            """, file: "bad-tls.yaml")
        #expect(invalid.contains("bad-tls.yaml:7:") && invalid.contains("'other.example.com' is not one of the VirtualService's hosts"), "\(invalid)")
        #expect(invalid.contains("a TLS match needs 'sniHosts'") && invalid.contains("a tls route's destination has no 'headers'"), "\(invalid)")
        // A gateway labelled otherwise has neither sourceLabels rule.
        let other = RouteConfiguration(localCluster: "east", tcpRoutes: VirtualServiceCompiler.compileTCP(loaded.virtualServices, proxyLabels: ["app": "y"]))
        #expect(other.tcpRoute(for: db, sourceNamespace: "web", random: 0) == nil)
    }

    @Test("tls: routes under a wildcard host serve every service it covers, by the longest suffix; a service's own host comes first")
    func wildcardTLSRoutes() throws {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: partners, namespace: shop}
            spec:
              hosts: ["*.partners.example.com"]
              tls:
              - match: [{sniHosts: ["*.partners.example.com"], port: 443}]
                route: [{destination: {host: egress.shop.svc.cluster.local, subset: partners}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: example, namespace: shop}
            spec:
              hosts: ["*.example.com", bank.partners.example.com]
              tls:
              - match: [{sniHosts: ["*.example.com"]}]
                route: [{destination: {host: egress.shop.svc.cluster.local, subset: general}}]
              - match: [{sniHosts: [bank.partners.example.com]}]
                route: [{destination: {host: egress.shop.svc.cluster.local, subset: bank}}]
            """, file: "wildcards.yaml")
        #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
        let routes = RouteConfiguration(localCluster: "east", tcpRoutes: VirtualServiceCompiler.compileTCP(loaded.virtualServices))
        func subset(_ host: String, _ port: Int = 443) -> String? {
            routes.tcpRoute(for: ServiceKey(host: host, port: port), sourceNamespace: nil, random: 0)?.destination.subset
        }
        #expect(subset("api.partners.example.com") == "partners")
        #expect(subset("bank.partners.example.com") == "bank")
        #expect(subset("www.example.com") == "general")
        #expect(subset("api.partners.example.com", 8443) == nil, "the partners rule holds for port 443 only")
        #expect(subset("example.org") == nil)
    }

    @Test("sourceLabels select by the gateway's labels, as istiod decides them for the proxy it configures: a match the gateway's labels lack is left out, and a sourceLabels match is never a catch-all")
    func sourceLabels() throws {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: reviews}
            spec:
              hosts: [reviews]
              http:
              - match: [{sourceLabels: {istio: ingressgateway}}]
                route: [{destination: {host: reviews, subset: v3}}]
              - match: [{sourceLabels: {istio: eastwestgateway}, uri: {prefix: /}}]
                route: [{destination: {host: reviews, subset: v2}}]
              - route: [{destination: {host: reviews, subset: v1}}]
            """, file: "s.yaml")
        #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
        func subset(labels: [String: String]) -> String? {
            let tables = VirtualServiceCompiler.compile(loaded.virtualServices, origins: [], proxyLabels: labels)
            return tables[Self.reviews]?.route(HTTPRequestFacts(method: "GET", path: "/x", authority: Self.reviews), port: nil, random: 0)?.destination?.subset
        }
        #expect(subset(labels: ["istio": "eastwestgateway"]) == "v2")
        #expect(subset(labels: ["istio": "ingressgateway"]) == "v3")
        #expect(subset(labels: ["app": "other"]) == "v1")
        let table = try #require(VirtualServiceCompiler.compile(loaded.virtualServices, origins: [], proxyLabels: ["istio": "eastwestgateway"])[Self.reviews])
        #expect(table.rules.map { $0.destinations.first?.subset } == ["v2", "v1"], "the catch-all after a sourceLabels rule is kept")
    }

    @Test("A regex's literal prefix refuses early, never changing what matches")
    func regexLiteralPrefix() throws {
        let cases: [(String, String)] = [("/items/[0-9]+", "/items/"), ("/v1/ab?c", "/v1/a"), ("abc+d", "abc"), ("a*", ""), ("a|b", ""),
                                         ("\\/api\\.v1/.*", "/api.v1/"), ("\\d+", ""), ("(?i)abc", ""), ("x{2}", ""), (".*Firefox.*", "")]
        for (pattern, prefix) in cases { #expect(FullMatchRegex.literalPrefix(of: pattern) == prefix, "\(pattern)") }
        let regex = try FullMatchRegex("/v1/ab?c")
        #expect(regex.matches("/v1/ac") && regex.matches("/v1/abc") && !regex.matches("/v1/abbc") && !regex.matches("/v2/ac"))
        #expect(try FullMatchRegex("abc+d").matches("abcccd"))
    }

    @Test("What Istio rejects is an error at its line; what EastWest does not carry out yet warns by name")
    func validation() throws {
        let bad = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: bad}
            spec:
              hosts: [reviews]
              http:
              - match: [{headers: {user-agent: {regex: "(?=Chrome).*"}}}]
                route: [{destination: {host: reviews, subset: v1}, weight: 50}, {destination: {host: reviews, subset: v2}}]
              - route:
                - {destination: {host: reviews}}
                - {destination: {host: ratings}}
            """
        do {
            _ = try IstioPolicyLoader.load(yaml: bad, file: "bad.yaml")
            Issue.record("loaded")
        } catch {
            let text = error.description
            #expect(text.contains("bad.yaml:7:") && text.contains("RE2 would reject"), "\(text)")
            #expect(text.contains("bad.yaml:9:") && text.contains("several destinations need weights"), "\(text)")
        }
        // Header operations carry valid names and single-line values: the gateway writes them as given.
        let headers = rejection(of: """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: h}
            spec:
              hosts: [reviews]
              http:
              - headers: {request: {set: {"bad name": x}}}
                route: [{destination: {host: reviews}, headers: {response: {add: {x-ok: "a\\r\\nInjected: 1"}}}}]
            """, file: "h.yaml")
        #expect(headers.contains("h.yaml:7:") && headers.contains("'bad name' is not a valid header name"), "\(headers)")
        #expect(headers.contains("h.yaml:8:") && headers.contains("line break"), "\(headers)")
        // retries and fault as Istio's validateHTTPRetry / validateHTTPFaultInjection judge them.
        let resilience = rejection(of: """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: r}
            spec:
              hosts: [reviews]
              http:
              - retries: {attempts: 0, perTryTimeout: 1s}
                route: [{destination: {host: reviews}}]
              - retries: {attempts: 2, retryOn: "5xx, reset"}
                route: [{destination: {host: reviews}}]
              - retries: {attempts: 2, retryOn: "5xx,999"}
                route: [{destination: {host: reviews}}]
              - fault: {abort: {httpStatus: 700, percentage: {value: 10}}}
                route: [{destination: {host: reviews}}]
              - fault: {delay: {exponentialDelay: 1s, percentage: {value: 150}}}
                route: [{destination: {host: reviews}}]
              - fault: {abort: {grpcStatus: NOPE}}
                route: [{destination: {host: reviews}}]
            """, file: "r.yaml")
        #expect(resilience.contains("r.yaml:7:") && resilience.contains("need attempts above 0"), "\(resilience)")
        #expect(resilience.contains("r.yaml:9:") && resilience.contains("' reset' is not a retry condition"), "\(resilience)")
        #expect(resilience.contains("r.yaml:11:") && resilience.contains("'999' is not a retry condition"), "\(resilience)")
        #expect(resilience.contains("r.yaml:13:") && resilience.contains("httpStatus 700"), "\(resilience)")
        #expect(resilience.contains("r.yaml:15:") && resilience.contains("exponentialDelay") && resilience.contains("between 0 and 100"), "\(resilience)")
        #expect(resilience.contains("r.yaml:17:") && resilience.contains("'NOPE' is not a gRPC status"), "\(resilience)")
        // A tcp route's destination carries no headers in Istio's API.
        let tcp = rejection(of: """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: db}
            spec:
              hosts: [db]
              tcp:
              - route: [{destination: {host: db}, headers: {request: {set: {x: y}}}}]
            """, file: "tcp.yaml")
        #expect(tcp.contains("tcp.yaml:7:") && tcp.contains("has no 'headers'"), "\(tcp)")
        // A syntax error in a later document is an error at its position, not a quiet end of file.
        let late = rejection(of: Self.jason + "\n---\n" + "kind: VirtualService\nspec: {hosts: [\"a\\2\"]}\n", file: "late.yaml")
        #expect(late.contains("late.yaml:") && late.contains("unknown escape character"), "\(late)")
        let partial = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: p}
            spec:
              hosts: [reviews]
              http:
              - timeout: 2s
                corsPolicy: {allowOrigins: [{exact: "https://example.com"}]}
                route: [{destination: {host: reviews, subset: v1}, weight: 0}, {destination: {host: reviews, subset: v2}, weight: 5}]
            """
        let loaded = try IstioPolicyLoader.load(yaml: partial, file: "p.yaml")
        #expect(loaded.warnings.map(\.field).sorted() == ["spec.http[0].corsPolicy"])
        let table = try #require(VirtualServiceCompiler.compile(loaded.virtualServices, origins: [])[Self.reviews])
        #expect(table.rules[0].destinations.map(\.subset) == ["v2"], "weight 0 is dropped")
    }

    @Test("The design document's retries, faults and connection pool, pasted into resources, load without a warning and compile to its limits")
    func designDocumentResilience() throws {
        let yaml = """
            apiVersion: networking.istio.io/v1beta1
            kind: VirtualService
            metadata: {name: mcp-organization-vs}
            spec:
              hosts: [mcp-organization]
              http:
              - retries:
                  attempts: 3
                  perTryTimeout: 10s
                  retryOn: "5xx,reset,connect-failure,refused-stream"
                  retryRemoteLocalities: true
                fault:
                  delay:
                    percentage:
                      value: 50
                    fixedDelay: 5s
                  abort:
                    percentage:
                      value: 10
                    httpStatus: 503
                route: [{destination: {host: mcp-organization}}]
            ---
            apiVersion: networking.istio.io/v1beta1
            kind: DestinationRule
            metadata: {name: mcp-organization-dr}
            spec:
              host: mcp-organization
              trafficPolicy:
                connectionPool:
                  tcp:
                    maxConnections: 100
                    connectTimeout: 30s
                    tcpKeepalive:
                      time: 7200s
                      interval: 75s
                  http:
                    http1MaxPendingRequests: 50
                    http2MaxRequests: 100
                    maxRequestsPerConnection: 10
            """
        let loaded = try IstioPolicyLoader.load(yaml: yaml, file: "design.yaml")
        #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
        let rule = try #require(VirtualServiceCompiler.compile(loaded.virtualServices, origins: [])["mcp-organization.default.svc.cluster.local"]).rules[0]
        #expect(rule.retry.maxAttempts == 4 && rule.retry.perTryTimeout == .seconds(10) && rule.retry.targets == .previousPriorities)
        #expect(rule.retry.retryOn == [.serverError, .reset, .connectFailure, .refusedStream])
        #expect(rule.fault == FaultInjection(delay: .init(duration: .seconds(5), perMillion: 500_000), abort: .init(httpStatus: 503, grpcStatus: nil, perMillion: 100_000)))
        let pool = try #require(loaded.destinationRules.first?.trafficPolicy?.connectionPool?.http)
        #expect(pool.limits == CircuitBreakers.Limits(maxRequests: 100, maxPending: 50))
        #expect(pool.maxRequestsPerConnection == 10)
    }

    @Test("retries compile as istiod's ConvertPolicy: attempts are retries, bare codes retriable, unset retryOn keeps the default list; fault shares in parts per million")
    func resiliencePolicies() throws {
        let routes = try compiled("""
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: r}
            spec:
              hosts: [reviews]
              http:
              - match: [{uri: {prefix: /a}}]
                retries: {attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,409", retryRemoteLocalities: true}
                fault: {delay: {fixedDelay: 5s, percentage: {value: 0.1}}, abort: {grpcStatus: UNAVAILABLE, percentage: {value: 12.5}}}
                route: [{destination: {host: reviews}}]
              - match: [{uri: {prefix: /b}}]
                retries: {attempts: 1, retryIgnorePreviousHosts: false}
                fault: {delay: {fixedDelay: 1s, percent: 20}}
                route: [{destination: {host: reviews}}]
              - route: [{destination: {host: reviews}}]
            """)
        let rules = try #require(routes.httpRoutes(for: Self.reviews)).rules
        #expect(rules[0].retry.maxAttempts == 4)
        #expect(rules[0].retry.retryOn == [.gatewayError, .connectFailure, .retriableStatusCodes])
        #expect(rules[0].retry.retriableStatusCodes == [409])
        #expect(rules[0].retry.perTryTimeout == .seconds(2))
        #expect(rules[0].retry.targets == .previousPriorities)
        #expect(rules[0].fault == FaultInjection(delay: .init(duration: .seconds(5), perMillion: 1000),
                                                 abort: .init(httpStatus: 200, grpcStatus: 14, perMillion: 125_000)))
        #expect(rules[1].retry.maxAttempts == 2 && rules[1].retry.retryOn == RetryPolicy.istioDefault.retryOn && !rules[1].retry.avoidPreviousHosts)
        #expect(rules[1].fault?.delay?.perMillion == 200_000 && rules[1].fault?.abort == nil)
        #expect(rules[2].retry == .istioDefault && rules[2].fault == nil)
        // Delay and abort are rolled independently, Envoy's `random % 1e6 < numerator`.
        let fault = try #require(rules[0].fault)
        #expect(fault.decide(delayRandom: 999, abortRandom: 124_999) == .init(delay: .seconds(5), abort: fault.abort))
        #expect(fault.decide(delayRandom: 1000, abortRandom: 125_000) == .init(delay: nil, abort: nil))
    }
}

@Suite("HTTP local replies")
struct HTTPLocalReplyTests {
    @Test("Envoy's bodies and flags; the date is RFC 9110's IMF-fixdate")
    func replies() {
        #expect(HTTPLocalReply.connectFailure(timedOut: false, attempts: 1, detail: "").body
                == "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure")
        #expect(HTTPLocalReply.connectFailure(timedOut: true, attempts: 3, detail: "").body
                == "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection timeout")
        #expect(HTTPLocalReply.connectFailure(timedOut: true, attempts: 3, detail: "").flags == [.upstreamConnectionFailure, .upstreamRetryLimitExceeded])
        #expect(HTTPLocalReply.noHealthyUpstream("").body == "no healthy upstream")
        #expect(HTTPLocalReply.overflow("").headers.first?.name == "x-envoy-overloaded")
        #expect(HTTPLocalReply.httpDate(Date(timeIntervalSince1970: 784_111_777)) == "Sun, 06 Nov 1994 08:49:37 GMT")
    }
}

/// A service directory with the given ports (the router asks it which port a host has).
struct TestServices: ServiceDirectory {
    var ports: [String: [Int]]
    func ports(of host: String) -> [Int] { ports[host] ?? [] }
    func `protocol`(of service: ServiceKey) -> ServiceProtocol? { .http }
}
