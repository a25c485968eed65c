import { signIn } from "../api.js";
import { clear, describe, h, message } from "../dom.js";
import { t } from "../i18n.js";

export async function renderSignIn(root, _match, { notice, signedIn }) {
  const status = h("div", { class: "status", "aria-live": "polite" },
    notice ? message(notice.kind, notice.text) : null);
  const token = h("input", {
    id: "token", name: "token", type: "password", autocomplete: "current-password",
    required: true, spellcheck: "false", maxlength: "200",
  });
  const submit = h("button", { type: "submit" }, t("signin.submit"));
  const form = h(
    "form",
    { class: "signin", onsubmit: async (event) => {
      event.preventDefault();
      submit.disabled = true;
      clear(status);
      try {
        await signIn(token.value.trim());
        token.value = "";
        signedIn();
      } catch (exc) {
        clear(status, message("error", describe(exc)));
        token.select();
      } finally {
        submit.disabled = false;
      }
    } },
    h("h1", {}, t("signin.title")),
    h("label", { for: "token" }, t("signin.token")),
    token,
    h("p", { class: "hint" }, t("signin.hint")),
    submit,
    status,
  );
  root.append(form);
  token.focus();
}
