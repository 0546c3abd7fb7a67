import NIOHTTP1
import Testing
@testable import MeshProxyCore

@Suite("CUSTOM AuthorizationPolicies and ext-authz providers (mesh config, Envoy's HTTP check)")
struct ExternalAuthorizerTests {
    /// Istio's authz-custom task: the mesh config edited into the `istio` ConfigMap.
    static let taskConfigMap = """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: istio
          namespace: istio-system
        data:
          mesh: |-
            # Add the following content to define the external authorizers.
            extensionProviders:
            - name: "sample-ext-authz-grpc"
              envoyExtAuthzGrpc:
                service: "ext-authz.foo.svc.cluster.local"
                port: "9000"
            - name: "sample-ext-authz-http"
              envoyExtAuthzHttp:
                service: "ext-authz.foo.svc.cluster.local"
                port: "8000"
                includeRequestHeadersInCheck: ["x-ext-authz"]
        """

    @Test("The task's istio ConfigMap loads both providers (port as a string) without a warning; a field not carried out warns at its line inside the embedded mesh text; other ConfigMaps are skipped")
    func configMap() throws {
        let loaded = try IstioPolicyLoader.load(yaml: Self.taskConfigMap + "\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-settings}\ndata: {a: b}\n",
                                                file: "mesh.yaml")
        #expect(loaded.extensionProviders.map(\.name) == ["sample-ext-authz-grpc", "sample-ext-authz-http"])
        let http = try #require(loaded.extensionProviders[1].envoyExtAuthzHttp)
        #expect(http.port.value == 8000 && http.includeRequestHeadersInCheck == ["x-ext-authz"])
        #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
        // A field not carried out is warned about inside the embedded text, as a line of the
        // file (line 18, column 9: under envoyExtAuthzHttp); a body limit of 0, which Envoy
        // rejects, is an error at its line (14, under envoyExtAuthzGrpc).
        let clearing = try IstioPolicyLoader.load(yaml: Self.taskConfigMap.replacingOccurrences(
            of: "port: \"8000\"", with: "port: \"8000\"\n        clearRouteCache: true"), file: "mesh.yaml")
        #expect(clearing.warnings.count == 1 && clearing.warnings[0].description.hasPrefix("mesh.yaml:18:9:")
                && clearing.warnings[0].description.contains("clearRouteCache"), "\(clearing.warnings)")
        let problems: [String]
        do {
            _ = try IstioPolicyLoader.load(yaml: Self.taskConfigMap.replacingOccurrences(
                of: "port: \"9000\"", with: "port: \"9000\"\n        includeRequestBodyInCheck: {allowPartialMessage: true}"), file: "mesh.yaml")
            problems = []
        } catch { problems = error.errors.map(\.description) }
        #expect(problems.count == 1 && problems[0].hasPrefix("mesh.yaml:14:9:") && problems[0].contains("maxRequestBytes must be above 0"), "\(problems)")
        #expect(loaded.skipped.count == 1 && loaded.skipped[0].contains("ConfigMap 'app-settings'"))
    }

    @Test("An IstioOperator's meshConfig is read, its installation settings named in a warning; other mesh fields warn; an unknown field, a bad port, pathPrefix and wildcard are errors at their lines")
    func istioOperatorAndErrors() throws {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: install.istio.io/v1alpha1
            kind: IstioOperator
            spec:
              profile: default
              meshConfig:
                accessLogFile: /dev/stdout
                extensionProviders:
                - name: opa
                  envoyExtAuthzHttp: {service: foo/opa.foo.svc.cluster.local, port: 9191, timeout: 2s, failOpen: true, statusOnError: "503"}
                - name: zipkin
                  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
            """, file: "operator.yaml")
        #expect(loaded.extensionProviders.map(\.name) == ["opa", "zipkin"])
        let opa = ExternalAuthorizer(loaded.extensionProviders[0])
        #expect(opa.host == "opa.foo.svc.cluster.local" && opa.port == 9191 && opa.timeout == .seconds(2) && opa.failOpen && opa.statusOnError == 503)
        let warned = loaded.warnings.map(\.description).joined(separator: "\n")
        #expect(warned.contains("profile") && warned.contains("accessLogFile") && warned.contains("zipkin"), "\(warned)")
        // Only the ext-authz kinds become authorizers.
        #expect(ExternalAuthorizers(loaded.extensionProviders).byName.keys.sorted() == ["opa"])

        #expect(throws: ConfigErrors.self) {
            try IstioPolicyLoader.load(yaml: "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  meshConfig: {extensionProvider: []}\n", file: "typo.yaml")
        }
        do {
            _ = try IstioPolicyLoader.load(yaml: """
                apiVersion: install.istio.io/v1alpha1
                kind: IstioOperator
                spec:
                  meshConfig:
                    extensionProviders:
                    - name: a
                      envoyExtAuthzHttp: {service: a.b.svc.cluster.local, port: 70000}
                    - name: a
                      envoyExtAuthzHttp: {service: "", port: 80, pathPrefix: check, includeRequestHeadersInCheck: ["*"], statusOnError: nope}
                """, file: "bad.yaml")
            Issue.record("invalid providers loaded")
        } catch {
            let text = error.description
            #expect(text.contains("bad.yaml:7:") && text.contains("port must be in the range [1, 65535], found: 70000"), "\(text)")
            for expected in ["must be unique", "service must not be empty", "pathPrefix must begin with `/`", "a single wildcard", "unsupported statusOnError"] {
                #expect(text.contains(expected), "\(expected): \(text)")
            }
        }
    }

    func authorizer(_ http: MeshConfig.ExtAuthzHTTP) -> ExternalAuthorizer {
        ExternalAuthorizer(.init(name: "check", envoyExtAuthzHttp: http))
    }

    @Test("The check request: the client's method, pathPrefix before the path and query, content-length 0, host and authorization always, the listed headers by prefix/suffix ignoring case, additional headers set")
    func checkRequest() {
        var http = MeshConfig.ExtAuthzHTTP(service: "authz.foo.svc.cluster.local", port: 8000, pathPrefix: "/check", includeRequestHeadersInCheck: ["x-ext-authz", "x-tenant-*", "*-user"])
        http.includeAdditionalHeadersInCheck = ["x-from": "eastwest", "x-ext-authz": "replaced"]
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/headers?a=1")
        head.headers = HTTPHeaders([("Host", "httpbin.foo:8000"), ("Authorization", "Bearer t"), ("X-Ext-Authz", "allow"), ("x-tenant-id", "7"),
                                    ("end-user", "jason"), ("cookie", "secret"), ("content-length", "12")])
        let check = authorizer(http).checkRequest(for: head)
        #expect(check.method == .POST && check.uri == "/check/headers?a=1")
        #expect(check.headers["content-length"] == ["0"])
        #expect(check.headers["host"] == ["httpbin.foo:8000"] && check.headers["authorization"] == ["Bearer t"])
        #expect(check.headers["x-tenant-id"] == ["7"] && check.headers["end-user"] == ["jason"] && check.headers["cookie"].isEmpty)
        #expect(check.headers["x-ext-authz"] == ["replaced"] && check.headers["x-from"] == ["eastwest"])
    }

    @Test("Answers: 200 allows with the listed upstream and client headers and x-envoy-auth-headers-to-remove; 403 denies with its body and every header but host (or the listed ones); 5xx is an error")
    func verdicts() {
        let plain = authorizer(.init(service: "a", port: 1))
        let answer = HTTPHeaders([("x-ext-authz-check-result", "denied"), ("content-type", "text/plain"), ("content-length", "9"), ("host", "x"),
                                  ("x-envoy-auth-headers-to-remove", "cookie, x-secret")])
        #expect(plain.verdict(status: 403, headers: answer, body: Array("go away\n".utf8)) == .denied(status: 403, headers: [
            .init(name: "x-ext-authz-check-result", value: "denied"), .init(name: "content-type", value: "text/plain")], body: Array("go away\n".utf8)))
        #expect(plain.verdict(status: 401, headers: [:], body: []) == .denied(status: 401, headers: [], body: []))
        #expect(plain.verdict(status: 503, headers: answer, body: []) == .failed)
        #expect(plain.verdict(status: 200, headers: answer, body: []) == .allowed(.init(removeFromRequest: ["cookie", "x-secret"])))

        let listed = authorizer(.init(service: "a", port: 1, headersToUpstreamOnAllow: ["x-user-*"], headersToDownstreamOnAllow: ["x-trace"],
                                      headersToDownstreamOnDeny: ["x-reason"]))
        let allowedHeaders = HTTPHeaders([("X-User-Id", "42"), ("x-trace", "t1"), ("x-other", "no")])
        #expect(listed.verdict(status: 200, headers: allowedHeaders, body: []) == .allowed(.init(requestHeaders: [.init(name: "x-user-id", value: "42")],
                                                                                              addToResponse: [.init(name: "x-trace", value: "t1")])))
        #expect(listed.verdict(status: 403, headers: HTTPHeaders([("x-reason", "r"), ("x-other", "o"), ("www-authenticate", "Basic")]), body: [])
            == .denied(status: 403, headers: [.init(name: "x-reason", value: "r"), .init(name: "www-authenticate", value: "Basic")], body: []))
    }

    @Test("CUSTOM decides first: a matching rule asks its provider (HTTP or gRPC); no match passes; an unknown or second provider refuses what its rules match; on TCP an HTTP provider does nothing and a gRPC one checks the connection; a forwarded request is asked only for policies selecting the gateway")
    func customDecision() throws {
        let loaded = try IstioPolicyLoader.load(yaml: Self.taskConfigMap, file: "mesh.yaml")
        let providers = ExternalAuthorizers(loaded.extensionProviders)
        func policy(_ provider: String, selector: [String: String] = ["app": "httpbin"], name: String = "ext-authz") -> AuthorizationPolicy {
            var policy = AuthorizationPolicy(action: .custom, rules: [.init(to: [.init(paths: ["/headers"])])], selector: selector, namespace: "foo", name: name)
            policy.provider = .init(name: provider)
            return policy
        }
        func decide(_ policies: [AuthorizationPolicy], path: String = "/headers", tcp: Bool = false, forwarded: Bool = false) -> AuthorizationEngine.CustomDecision {
            let applying = AuthorizationEngine(policies: policies).applicable(gatewayLabels: ["istio": "eastwestgateway"], gatewayNamespace: "istio-system",
                                                                              serviceNamespace: "foo", serviceLabels: [["app": "httpbin"]])
            let request = AuthorizationRequest(principal: nil, sourceIP: "10.0.0.1", destinationIP: "127.0.0.1", listenerPort: 15443, servicePort: 8000,
                                               serverName: "httpbin.foo", http: tcp ? nil : .init(host: "httpbin.foo", method: "GET", path: path, headers: [:]))
            return AuthorizationEngine.custom(request, policies: applying, providers: providers, forwarded: forwarded)
        }
        guard case .check(let authorizer) = decide([policy("sample-ext-authz-http")]) else { Issue.record("not checked"); return }
        #expect(authorizer.name == "sample-ext-authz-http" && authorizer.host == "ext-authz.foo.svc.cluster.local" && authorizer.port == 8000)
        #expect(decide([policy("sample-ext-authz-http")], path: "/ip") == .pass)
        #expect(decide([policy("sample-ext-authz-http")], tcp: true) == .pass)
        #expect(decide([policy("sample-ext-authz-http")], forwarded: true) == .pass)
        guard case .refuse(let rule, let why) = decide([policy("missing")]) else { Issue.record("unknown provider passed"); return }
        #expect(rule == "ns[foo]-policy[ext-authz]-rule[0]" && why.contains("'missing'"))
        guard case .check(let grpcAuthorizer) = decide([policy("sample-ext-authz-grpc")]) else { Issue.record("gRPC not checked"); return }
        #expect(grpcAuthorizer.transport == .grpc && grpcAuthorizer.port == 9000)
        #expect(decide([policy("sample-ext-authz-grpc")], tcp: true) == .check(grpcAuthorizer), "Envoy's network ext_authz checks a TCP connection")
        guard case .refuse(_, let several) = decide([policy("sample-ext-authz-http"), policy("sample-ext-authz-grpc", name: "second")]) else {
            Issue.record("two providers checked"); return
        }
        #expect(several.contains("several"))
        // The ALLOW/DENY decision no longer sees CUSTOM policies.
        #expect(AuthorizationEngine.decide(AuthorizationRequest(principal: nil, sourceIP: "1.1.1.1", destinationIP: "1.1.1.1", listenerPort: 1, servicePort: 1,
                                                                serverName: "", http: .init(host: "h", method: "GET", path: "/headers", headers: [:])),
                                           policies: AuthorizationEngine(policies: [policy("missing", selector: [:])]).policies).allowed)
        #expect(ExternalAuthorizers.warnings({ var l = loaded; l.authorizationPolicies = [policy("missing")]; return l }()).count == 1)
    }
}
