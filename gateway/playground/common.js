// What the playground and the Studio share: the signed-in key, the API client and its errors,
// the error box, sign-in and sign-out, and the helpers that put text into the page. Text a tenant
// wrote always goes in as text (textContent), never as HTML.

export const $ = (selector) => document.querySelector(selector);
const KEY = "adapter-factory-key";  // sessionStorage, one key for both pages: gone with the tab
export const state = { key: sessionStorage.getItem(KEY) };  // each page adds its own fields

export class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;  // seconds, from a refusal's Retry-After header
  }
}

// a refusal as the API words it ({"error": {"message": ...}}), else its status line
export function apiError(status, statusText, body, retryAfter) {
  let message = null;
  try { message = JSON.parse(body).error?.message; } catch { /* not JSON */ }
  return new ApiError(status, message || statusText || `HTTP ${status}`, retryAfter || null);
}

// -- the API -----------------------------------------------------------------------------------
// The response, for a stream or a body of any kind; an ApiError for a refusal. A JSON body (a
// string) is sent as JSON; FormData and files set their own content type.
export async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { authorization: `Bearer ${state.key}`,
               ...(typeof options.body === "string" ? { "content-type": "application/json" }
                 : {}) },
  });
  if (!response.ok) {
    throw apiError(response.status, response.statusText, await response.text().catch(() => ""),
                   response.headers.get("retry-after"));
  }
  return response;
}

// the answer's JSON; an answer without a body is {}
export async function getJson(path, options = {}) {
  const text = await (await api(path, options)).text();
  return text ? JSON.parse(text) : {};
}

// -- errors ------------------------------------------------------------------------------------
export function showError(error) {
  if (error.name === "AbortError") return;  // a stop button
  let text = error instanceof ApiError ? `${error.status}: ${error.message}` : String(error);
  if (error.retryAfter) text += ` (try again in ${error.retryAfter} s)`;
  $("#error").textContent = text;
  $("#error").hidden = false;
}

export const clearError = () => { $("#error").hidden = true; };

// -- putting text into the page ----------------------------------------------------------------
export function element(tag, text = "", className = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

// a table row: a string is a cell's text, a node goes in as it is
export function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell ?? "";
    tr.append(td);
  }
  return tr;
}

// a select's options from [value, text] pairs
export function setOptions(select, entries) {
  select.replaceChildren(...entries.map(([value, text]) => {
    const option = element("option", text);
    option.value = value;
    return option;
  }));
}

// -- sign in -----------------------------------------------------------------------------------
// The key is kept (this tab only) once `firstCall` with it has worked: a wrong key's 401 shows.
export async function useKey(key, firstCall) {
  state.key = key;
  const answer = await firstCall();
  sessionStorage.setItem(KEY, key);
  return answer;
}

// the sign-in form gives way to the page's `main`
export function showSignedIn(main) {
  $("#sign-in").hidden = true;
  main.hidden = false;
  $("#sign-out").hidden = false;
}

// The sign-in form and the sign-out button; a key kept from earlier in this tab signs in at once.
export function wireSignIn(signIn) {
  $("#sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearError();
    signIn($("#key").value.trim()).catch((error) => {
      sessionStorage.removeItem(KEY);
      showError(error);
    });
  });
  $("#sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  if (state.key) signIn(state.key).catch(showError);
}
