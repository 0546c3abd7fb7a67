import NIOHTTP1
import Testing
@testable import MeshProxyCore

@Suite("AuthorizationPolicy decisions (Istio's order, Envoy's RBAC matching)")
struct AuthorizationEngineTests {
    typealias Policy = AuthorizationPolicy
    let client = "spiffe://cluster.local/ns/default/sa/client"

    func request(_ principal: String? = "spiffe://cluster.local/ns/default/sa/client", method: String = "GET", path: String = "/reviews/1",
                 host: String = "reviews.default.svc.cluster.local", headers: [(String, String)] = [], ip: String = "10.1.2.3", tcp: Bool = false) -> AuthorizationRequest {
        AuthorizationRequest(principal: principal, sourceIP: ip, destinationIP: "127.0.0.1", listenerPort: 15443, servicePort: 9080, serverName: "outbound_.9080_._.reviews",
                             http: tcp ? nil : .init(host: host, method: method, path: path, headers: HTTPHeaders(headers)))
    }

    func decide(_ policies: [Policy], _ request: AuthorizationRequest) -> AuthorizationEngine.Decision {
        let engine = AuthorizationEngine(policies: policies)
        let applying = engine.applicable(gatewayLabels: ["istio": "eastwestgateway"], gatewayNamespace: "istio-system",
                                         serviceNamespace: "default", serviceLabels: [["app": "reviews", "version": "v1"]])
        return AuthorizationEngine.decide(request, policies: applying)
    }

    @Test("No policy allows; an ALLOW policy allows only what a rule matches; DENY wins over ALLOW; spec: {} allows nothing; rules: [{}] allows everything")
    func order() {
        #expect(decide([], request()).allowed)
        let allowClient = Policy(action: .allow, rules: [.init(from: [.init(principals: ["cluster.local/ns/default/sa/client"])])], name: "allow-client")
        #expect(decide([allowClient], request()).allowed)
        let other = decide([allowClient], request("spiffe://cluster.local/ns/default/sa/intruder"))
        #expect(!other.allowed && other.responseDetails == "rbac_access_denied_matched_policy[none]")
        let denyAdmin = Policy(action: .deny, rules: [.init(to: [.init(paths: ["/admin*"])])], name: "no-admin")
        let denied = decide([allowClient, denyAdmin], request(path: "/admin/users"))
        #expect(denied.deniedBy == "ns[default]-policy[no-admin]-rule[0]")
        #expect(!decide([Policy(action: .allow, rules: nil, name: "nothing")], request()).allowed)
        #expect(decide([Policy(action: .allow, rules: [.init()], name: "everything")], request(nil)).allowed)
    }

    @Test("Sources: principals with prefix/suffix/* globs, namespaces, ipBlocks CIDR, notPrincipals; a client without a certificate matches no principal")
    func sources() {
        func allows(_ source: Policy.Source, _ request: AuthorizationRequest) -> Bool {
            decide([Policy(action: .allow, rules: [.init(from: [source])])], request).allowed
        }
        #expect(allows(.init(principals: ["cluster.local/ns/default/*"]), request()))
        #expect(allows(.init(principals: ["*/sa/client"]), request()))
        #expect(allows(.init(principals: ["*"]), request()))
        #expect(!allows(.init(principals: ["*"]), request(nil)))
        #expect(allows(.init(notPrincipals: ["cluster.local/ns/default/sa/intruder"]), request()))
        #expect(allows(.init(namespaces: ["default"]), request()))
        #expect(!allows(.init(namespaces: ["prod*"]), request()))
        #expect(allows(.init(ipBlocks: ["10.1.0.0/16"]), request()))
        #expect(!allows(.init(ipBlocks: ["10.2.0.0/16", "192.168.1.1"]), request()))
    }

    @Test("Operations: hosts case-insensitive, methods, paths exact/prefix/suffix and {*}/{**} templates on the normalized path without its query; ports of the service for a service's policy")
    func operations() {
        func allows(_ operation: Policy.Operation, _ request: AuthorizationRequest) -> Bool {
            decide([Policy(action: .allow, rules: [.init(to: [operation])])], request).allowed
        }
        #expect(allows(.init(hosts: ["Reviews.Default.svc.cluster.local"]), request()))
        #expect(allows(.init(methods: ["GET", "HEAD"]), request()))
        #expect(!allows(.init(methods: ["POST"]), request()))
        #expect(allows(.init(paths: ["/reviews/*"]), request(path: "/reviews/1?x=/admin")))
        #expect(allows(.init(paths: ["*/1"]), request()))
        #expect(allows(.init(paths: ["/reviews/{*}"]), request()))
        #expect(!allows(.init(paths: ["/reviews/{*}"]), request(path: "/reviews/1/2")))
        #expect(allows(.init(paths: ["/reviews/{**}"]), request(path: "/reviews/1/2")))
        // `/public/../admin` is `/admin` to a policy, as to Envoy's normalize_path.
        #expect(!allows(.init(paths: ["/public/*"]), request(path: "/public/../admin")))
        #expect(!allows(.init(notPaths: ["/admin"]), request(path: "/public/%2E%2E/admin")))
        #expect(allows(.init(ports: ["9080"]), request()))
        // A policy selecting the gateway (by its labels) sees the gateway's port.
        let atGateway = Policy(action: .allow, rules: [.init(to: [.init(ports: ["15443"])])], selector: ["istio": "eastwestgateway"], namespace: "istio-system")
        #expect(decide([atGateway], request()).allowed)
    }

    @Test("when: request headers, source.namespace, source.principal, destination.port; request.auth keys never hold without JWT")
    func conditions() {
        func allows(_ condition: Policy.Condition, _ request: AuthorizationRequest) -> Bool {
            decide([Policy(action: .allow, rules: [.init(when: [condition])])], request).allowed
        }
        #expect(allows(.init(key: "request.headers[X-Tenant]", values: ["acme*"]), request(headers: [("x-tenant", "acme-1")])))
        #expect(!allows(.init(key: "request.headers[x-tenant]", values: ["acme"]), request()))
        #expect(allows(.init(key: "source.namespace", values: ["default"]), request()))
        #expect(allows(.init(key: "source.principal", values: ["cluster.local/ns/default/sa/client"]), request()))
        #expect(allows(.init(key: "destination.port", values: ["9080"]), request()))
        #expect(allows(.init(key: "request.headers[x-tenant]", notValues: ["evil"]), request()))
        #expect(!allows(.init(key: "request.auth.principal", values: ["*"]), request()))
    }

    @Test("TCP: an ALLOW rule with an HTTP-only attribute is dropped (all TCP denied), a DENY rule only loses the attribute (wider)")
    func tcpAttributes() {
        let allowGET = Policy(action: .allow, rules: [.init(to: [.init(methods: ["GET"])])])
        #expect(decide([allowGET], request()).allowed)
        #expect(!decide([allowGET], request(tcp: true)).allowed)
        let denyPOST = Policy(action: .deny, rules: [.init(to: [.init(methods: ["POST"])])])
        #expect(decide([denyPOST], request()).allowed)
        #expect(!decide([denyPOST], request(tcp: true)).allowed)
        let denyPOSTOnOtherPort = Policy(action: .deny, rules: [.init(to: [.init(ports: ["8080"], methods: ["POST"])])])
        #expect(decide([denyPOSTOnOtherPort], request(tcp: true)).allowed)
    }

    @Test("Scope: the root namespace without a selector is mesh-wide; a selector picks the gateway by its labels or the service by its workloads' labels; other namespaces' policies do not apply")
    func scope() {
        let engine = AuthorizationEngine(policies: [
            Policy(action: .deny, rules: [.init()], namespace: "istio-system", name: "mesh"),
            Policy(action: .deny, rules: [.init()], selector: ["version": "v1"], namespace: "default", name: "reviews-v1"),
            Policy(action: .deny, rules: [.init()], selector: ["version": "v9"], namespace: "default", name: "nobody"),
            Policy(action: .deny, rules: [.init()], namespace: "prod", name: "prod"),
            Policy(action: .deny, rules: [.init()], selector: ["istio": "eastwestgateway"], namespace: "istio-system", name: "gateway"),
        ])
        let names = engine.applicable(gatewayLabels: ["istio": "eastwestgateway"], gatewayNamespace: "istio-system", serviceNamespace: "default",
                                      serviceLabels: [["version": "v1"], ["version": "v2"]]).map(\.name)
        #expect(names == ["ns[istio-system]-policy[mesh]", "ns[default]-policy[reviews-v1]", "ns[istio-system]-policy[gateway]"])
    }

    @Test("AUDIT matches are reported and decide nothing; a dry-run policy is decided aside and never enforced")
    func auditAndDryRun() {
        let audit = Policy(action: .audit, rules: [.init(to: [.init(paths: ["/reviews/*"])])], name: "watch")
        let decision = decide([audit], request())
        #expect(decision.allowed && decision.audited == ["ns[default]-policy[watch]-rule[0]"])
        var dry = Policy(action: .deny, rules: [.init()], name: "would-deny")
        dry.dryRun = true
        let shadow = decide([dry], request())
        #expect(shadow.allowed && shadow.shadow == ["ns[default]-policy[would-deny]: denied"])
    }

    @Test("Compiled patterns: host suffix ignoring case, serviceAccounts with and without a namespace, IPv6 blocks, a template's empty segment, a SPIFFE ID with an empty account, an unknown when key")
    func compiledPatterns() {
        func allows(_ rule: Policy.Rule, _ request: AuthorizationRequest) -> Bool {
            decide([Policy(action: .allow, rules: [rule])], request).allowed
        }
        #expect(allows(.init(to: [.init(hosts: ["*.Svc.Cluster.Local"])]), request(host: "REVIEWS.default.svc.cluster.local")))
        #expect(!allows(.init(to: [.init(hosts: ["*.svc.cluster.local"])]), request(host: "cluster.local")))
        #expect(allows(.init(to: [.init(hosts: ["reviews*"])]), request(host: "Reviews.Default.svc")))
        var account = Policy.Source()
        account.serviceAccounts = ["client"]
        #expect(allows(.init(from: [account]), request()), "an account without a namespace is the policy's namespace")
        account.serviceAccounts = ["other/client"]
        #expect(!allows(.init(from: [account]), request()))
        account.serviceAccounts = ["default/client"]
        #expect(allows(.init(from: [account]), request()))
        #expect(allows(.init(from: [.init(ipBlocks: ["fd00::/8"])]), request(ip: "fd12::1")))
        #expect(!allows(.init(from: [.init(ipBlocks: ["fd00::/8", "not-an-address"])]), request(ip: "fe80::1")))
        #expect(!allows(.init(from: [.init(ipBlocks: ["10.0.0.0/8"])]), request(ip: "fd12::1")))
        #expect(!allows(.init(to: [.init(paths: ["/a/{*}/c"])]), request(path: "/a//c")), "{*} needs a non-empty segment")
        #expect(allows(.init(to: [.init(paths: ["/a/{*}/c"])]), request(path: "/a/b/c")))
        #expect(allows(.init(to: [.init(paths: ["/a/{**}"])]), request(path: "/a")))
        #expect(!allows(.init(to: [.init(paths: ["/a/{*}"])]), request(path: "/a")))
        #expect(allows(.init(from: [.init(namespaces: ["default"])]), request("spiffe://td/ns/default/sa/")))
        #expect(!allows(.init(from: [.init(namespaces: ["default"])]), request("spiffe://td/ns/default/sa")))
        #expect(!allows(.init(when: [.init(key: "experimental.envoy.filters.network.rbac[k]", values: ["v"])]), request()))
        #expect(allows(.init(when: [.init(key: "experimental.envoy.filters.network.rbac[k]", notValues: ["v"])]), request()))
    }
}
