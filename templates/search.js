// bantin's search box: Pagefind's index of every article, searched in the browser.
// Published as /assets/search.js. A query with Vietnamese marks matches them exactly
// ("tiệp" does not find "tiếp"); one without marks matches any ("tiep" finds "tiếp").
(function () {
  "use strict";
  var form = document.querySelector("form.search");
  var box = document.getElementById("search-results");
  if (!form || !box) return;
  var base = form.getAttribute("data-base") || "";
  var input = form.querySelector("input[type=search]");
  var pagefind = null;
  var loading = null;
  var latest = 0;

  function load() {
    if (!loading) {
      loading = import(base + "/pagefind/pagefind.js").then(function (module) {
        pagefind = module;
        return module;
      });
    }
    return loading;
  }

  function hasMarks(text) {
    return /[đĐ]/.test(text) || text.normalize("NFD") !== text;
  }

  // Pagefind's excerpt is text with <mark> around the hits: build it as nodes, never as HTML.
  function excerpt(text) {
    var holder = document.createElement("p");
    var decoder = document.createElement("textarea");
    text.split(/(<mark>|<\/mark>)/).reduce(function (inMark, part) {
      if (part === "<mark>") return true;
      if (part === "</mark>") return false;
      decoder.innerHTML = part;
      var node = document.createTextNode(decoder.value);
      if (inMark) {
        var mark = document.createElement("mark");
        mark.appendChild(node);
        holder.appendChild(mark);
      } else {
        holder.appendChild(node);
      }
      return inMark;
    }, false);
    return holder;
  }

  function show(query, results, total) {
    box.textContent = "";
    var head = document.createElement("p");
    head.className = "meta";
    head.textContent = total
      ? "Tìm thấy " + total + " tin cho «" + query + "»" + (total > results.length ? ", " + results.length + " tin đầu:" : ":")
      : "Không tìm thấy tin nào cho «" + query + "».";
    box.appendChild(head);
    var list = document.createElement("ul");
    list.className = "articles";
    results.forEach(function (item) {
      var li = document.createElement("li");
      var link = document.createElement("a");
      link.href = item.url;
      var strong = document.createElement("strong");
      strong.textContent = (item.meta && item.meta.title) || item.url;
      link.appendChild(strong);
      li.appendChild(link);
      if (item.meta && item.meta.date) {
        var date = document.createElement("div");
        date.className = "meta";
        date.textContent = item.meta.date;
        li.appendChild(date);
      }
      li.appendChild(excerpt(item.excerpt || ""));
      list.appendChild(li);
    });
    box.appendChild(list);
    box.hidden = false;
  }

  function search() {
    var query = input.value.trim();
    var ticket = ++latest;
    if (!query) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    load()
      .then(function (module) {
        return module.options({ exactDiacritics: hasMarks(query) }).then(function () {
          return module.search(query);
        });
      })
      .then(function (found) {
        return Promise.all(found.results.slice(0, 10).map(function (r) { return r.data(); })).then(
          function (data) { return [found.results.length, data]; }
        );
      })
      .then(function (pair) {
        if (ticket === latest) show(query, pair[1], pair[0]);
      })
      .catch(function () {
        if (ticket === latest) {
          box.textContent = "Chưa tìm kiếm được: chỉ mục tìm kiếm đang được tạo, xin thử lại sau.";
          box.hidden = false;
        }
      });
  }

  var timer = null;
  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(search, 250);
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearTimeout(timer);
    search();
  });
  form.hidden = false;
  var asked = new URLSearchParams(window.location.search).get("q");  // a shared search link
  if (asked) input.value = asked;
  if (input.value) search();
})();
