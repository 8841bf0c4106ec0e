# The platform's one decision point (ARCHITECTURE §10). The embedded engine (regorus) and an
# OPA server both load this file, so it keeps to Rego v1 that both understand.
package soma.policy

import rego.v1

# Actions a chat key may take; `admin` keys may take them too.
chat_actions := {"conversation.send", "memory.read", "memory.write", "upload.create", "tool.execute"}

scopes := {scope | some scope in input.subject.scopes}

# Deny is the default: only a complete, valid input can reach an allowing branch below.
# A tool needing approval answers allow=false with require_approval=true, so a caller that
# only looks at `allow` still refuses it.
default decision := {"allow": false, "require_approval": false, "reason": "malformed policy input"}

decision := _deny(problem) if {
	problem := input_problem
} else := _deny("cross-tenant access") if {
	cross_tenant
} else := _deny(sprintf("no rule allows %s", [input.action])) if {
	not required_scope
} else := _deny(sprintf("missing scope %s", [required_scope])) if {
	not _holds(required_scope)
} else := {"allow": false, "require_approval": true, "reason": "tool requires approval"} if {
	input.action == "tool.execute"
	input.resource.requires_approval == true
	not input.context.approved == true
} else := {"allow": true, "require_approval": false, "reason": "allowed"}

input_problem := "action must be a non-empty string" if {
	not _non_empty_string(input.action)
} else := "tenant must be a non-empty string" if {
	not _non_empty_string(input.tenant)
} else := "subject.scopes must be an array of strings" if {
	not _string_array(input.subject.scopes)
} else := "resource must be an object" if {
	not _object_or_absent("resource")
} else := "context must be an object" if {
	not _object_or_absent("context")
}

# A resource naming a tenant (even as null) must name the caller's.
cross_tenant if input.resource.tenant_id != input.tenant

required_scope := "chat" if input.action in chat_actions

required_scope := "admin" if startswith(input.action, "admin.")

_holds(scope) if scope in scopes

_holds(_) if "admin" in scopes

_deny(reason) := {"allow": false, "require_approval": false, "reason": reason}

_non_empty_string(value) if {
	is_string(value)
	value != ""
}

_string_array(value) if {
	is_array(value)
	every item in value {
		is_string(item)
	}
}

_object_or_absent(key) if is_object(object.get(input, key, {}))
