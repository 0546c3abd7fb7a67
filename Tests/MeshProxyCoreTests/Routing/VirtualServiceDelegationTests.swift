import NIOHTTP1
import Testing
@testable import MeshProxyCore

/// Delegation as istiod merges it: the root rule's matches and policies around the delegate's rules.
@Suite("VirtualService delegation")
struct VirtualServiceDelegationTests {
    static let reviews = "reviews.default.svc.cluster.local"

    static let root = """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: bookinfo, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - name: reviews
            match: [{uri: {prefix: /reviews}}]
            delegate: {name: reviews, namespace: team-a}
            timeout: 5s
          - route: [{destination: {host: reviews, subset: v1}}]
        """

    static let delegate = """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: team-a}
        spec:
          http:
          - name: jason
            match: [{headers: {end-user: {exact: jason}}}]
            route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
          - match: [{uri: {prefix: /other}}]
            route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]
          - route: [{destination: {host: reviews, subset: v3}}]
            timeout: 2s
        """

    func request(_ path: String, _ headers: [(String, String)] = []) -> HTTPRequestFacts {
        HTTPRequestFacts(method: "GET", path: path, authority: Self.reviews, headers: HTTPHeaders(headers))
    }

    @Test("A root rule's delegate rules inherit its match and its timeout where they set none; a delegate rule outside the root's match is left out with a warning; short hosts resolve in the delegate's namespace; the delegate routes nothing by itself")
    func merge() throws {
        let loaded = try IstioPolicyLoader.load(yaml: Self.root + "\n---\n" + Self.delegate, file: "delegation.yaml")
        #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
        var draft = PolicyCompiler.Draft()
        for step in PolicyCompiler.kinds { step.compile(loaded, &draft) }
        #expect(draft.httpRoutes.keys.sorted() == [Self.reviews], "only the root's host has routes")
        let table = try #require(draft.httpRoutes[Self.reviews])

        let jason = try #require(table.route(request("/reviews/1", [("end-user", "jason")]), port: nil, random: 0))
        #expect(jason.destination?.subset == "v2")
        #expect(jason.rule.name == "reviews-jason", "root and delegate names joined, as istiod joins them")
        #expect(jason.rule.timeout == .seconds(5), "the root's timeout where the delegate sets none")
        #expect(jason.rule.origin.contains("VirtualService default/bookinfo http[0]") && jason.rule.origin.contains("delegate team-a/reviews http[0], delegation.yaml:"),
                "\(jason.rule.origin)")

        let other = try #require(table.route(request("/reviews/1"), port: nil, random: 0))
        #expect(other.destination?.host == "reviews.team-a.svc.cluster.local", "a short host of the delegate is its namespace's")
        #expect(other.rule.timeout == .seconds(2), "the delegate's own timeout wins")

        // Outside the root's /reviews: the delegate's rules never apply, its /other rule included.
        #expect(try #require(table.route(request("/other"), port: nil, random: 0)).destination?.subset == "v1")
        #expect(try #require(table.route(request("/ratings", [("end-user", "jason")]), port: nil, random: 0)).destination?.subset == "v1")

        let warnings = VirtualServiceDelegation.warnings(loaded.virtualServices, origins: loaded.virtualServiceOrigins)
        #expect(warnings.count == 1 && warnings[0].contains("delegate team-a/reviews http[1]") && warnings[0].contains("matches nothing the root rule matches"), "\(warnings)")
    }

    @Test("A missing delegate, or one not exported to the root's namespace, leaves the root rule out with a warning; the root's other rules still route")
    func missingDelegate() throws {
        let hidden = Self.delegate.replacingOccurrences(of: "spec:\n", with: "spec:\n  exportTo: [.]\n")
        for (yaml, says) in [(Self.root, "which is not loaded"), (Self.root + "\n---\n" + hidden, "is not exported to namespace default")] {
            let loaded = try IstioPolicyLoader.load(yaml: yaml, file: "root.yaml")
            let warnings = VirtualServiceDelegation.warnings(loaded.virtualServices, origins: loaded.virtualServiceOrigins)
            #expect(warnings.count == 1 && warnings[0].contains("VirtualService default/bookinfo http[0] (root.yaml:7)") && warnings[0].contains(says), "\(warnings)")
            var draft = PolicyCompiler.Draft()
            for step in PolicyCompiler.kinds { step.compile(loaded, &draft) }
            let table = try #require(draft.httpRoutes[Self.reviews])
            #expect(table.rules.count == 1)
            #expect(try #require(table.route(request("/reviews/1"), port: nil, random: 0)).destination?.subset == "v1")
        }
    }

    @Test("Istio's match merging: a delegate match must fit inside a root match (prefix within prefix, exact within prefix, same exact; regex and presence-only roots take nothing more); headers and the rest are the union")
    func matchConflicts() {
        typealias S = VirtualService.StringMatch
        #expect(!VirtualServiceDelegation.conflict(S(prefix: "/a"), S(prefix: "/a/b")))
        #expect(VirtualServiceDelegation.conflict(S(prefix: "/a/b"), S(prefix: "/a")))
        #expect(!VirtualServiceDelegation.conflict(S(prefix: "/a"), S(exact: "/a/x")))
        #expect(VirtualServiceDelegation.conflict(S(exact: "/a"), S(exact: "/b")))
        #expect(!VirtualServiceDelegation.conflict(S(exact: "/a"), S(exact: "/a")))
        #expect(VirtualServiceDelegation.conflict(S(exact: "/a"), S(prefix: "/a")))
        #expect(VirtualServiceDelegation.conflict(S(regex: "/a.*"), S(prefix: "/a")))
        #expect(VirtualServiceDelegation.conflict(S(prefix: "/a"), S(regex: "/a.*")))
        #expect(VirtualServiceDelegation.conflict(S(), S(prefix: "/a")), "a presence-only root")
        #expect(!VirtualServiceDelegation.conflict(nil, S(regex: "x")) && !VirtualServiceDelegation.conflict(S(regex: "x"), nil))
        var root = VirtualService.HTTPMatchRequest(uri: S(prefix: "/api"), headers: ["x-team": S(exact: "a")])
        root.port = 9080
        let leaf = VirtualService.HTTPMatchRequest(uri: S(prefix: "/api/v2"), headers: ["x-canary": S(exact: "1")])
        let merged = VirtualServiceDelegation.mergeMatch(root: root, leaf: leaf)
        #expect(merged.uri == S(prefix: "/api/v2") && merged.port == 9080)
        #expect(merged.headers == ["x-team": S(exact: "a"), "x-canary": S(exact: "1")])
        var otherPort = leaf
        otherPort.port = 8080
        #expect(VirtualServiceDelegation.conflict(root: root, leaf: otherPort))
        #expect(VirtualServiceDelegation.conflict(root: root, leaf: .init(headers: ["x-team": S(exact: "b")])))
    }

    @Test("What Istio's validation rejects about delegation is an error at its line")
    func rejections() {
        let cases: [(String, String)] = [
            (Self.root.replacingOccurrences(of: "    timeout: 5s", with: "    route: [{destination: {host: reviews}}]"), "a delegate cannot be combined with route"),
            (Self.delegate + "\n  tcp: [{route: [{destination: {host: db}}]}]", "a delegate VirtualService (no hosts) has only 'http' rules"),
            (Self.delegate.replacingOccurrences(of: "    timeout: 2s", with: "    delegate: {name: deeper}"), "cannot delegate again"),
        ]
        for (yaml, message) in cases {
            do {
                _ = try IstioPolicyLoader.load(yaml: yaml, file: "bad.yaml")
                Issue.record("loaded: \(message)")
            } catch {
                #expect(error.description.contains("bad.yaml:") && error.description.contains(message), "\(error.description)")
            }
        }
    }
}
